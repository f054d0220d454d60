"""calibench.world: a seeded synthetic world of fictional people, and the data derived from it.

The lifecycle lab pretrains and aligns small models on this world, so what a model knows (and how
often it saw each fact) is known exactly; see ``docs/lifecycle-lab.md``.
"""

from calibench.world.build import FILES, WorldPaths, build_world, load_world, read_jsonl
from calibench.world.derived import BUCKETS, bucket_of_id, chat_prompt
from calibench.world.entities import World, WorldConfig, make_world

__all__ = ["BUCKETS", "FILES", "bucket_of_id", "chat_prompt", "World", "WorldConfig", "WorldPaths", "build_world", "load_world", "make_world", "read_jsonl"]
