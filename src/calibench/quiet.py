"""Silence the libraries calibench drives: progress bars, info logs and known-noise warnings.

transformers, datasets and huggingface_hub each draw their own bars ("Loading weights", "Map",
downloads) and log warnings; under calibench's own progress display (or ``--quiet``) they only cut
through it. Errors still reach the user: calibench turns them into one-line messages.
"""

from __future__ import annotations


def quiet_libraries(*, warnings_too: bool = False) -> None:
    """Turn off the bars and info logs of transformers, datasets and huggingface_hub (errors stay on);
    ``warnings_too`` also drops Python warnings and library warning logs (``--quiet``)."""
    import logging
    import warnings

    import datasets
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    # TRL 1.16 still calls the gradient_checkpointing names that transformers 5 deprecates.
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
    datasets.disable_progress_bars()
    hub_utils.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    datasets.logging.set_verbosity_error()
    if warnings_too:
        warnings.filterwarnings("ignore")
        for name in ("transformers", "datasets", "huggingface_hub", "trl", "peft", "accelerate", "torch", "ray"):
            logging.getLogger(name).setLevel(logging.ERROR)
