"""Task loaders on fixture files in the real formats, the built-in world tasks, prompts and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from calibench.errors import CalibenchError
from calibench.tasks import CLMDoc, FactItem, MCItem, load_task
from calibench.tasks import mc as mc_mod
from calibench.tasks.prompts import (
    fact_prompt,
    mc_choice_letters,
    mc_choice_prompt,
    mc_continuation_context,
    mc_continuation_options,
    select_fewshot,
)

FIX = Path(__file__).parent / "fixtures" / "tasks"


# --- multiple choice -----------------------------------------------------------------------------


def test_mmlu_csv_dir_reads_items_and_dev_pool():
    task = load_task(FIX / "mmlu" / "data")
    assert task.kind == "mc" and task.name == "mmlu"
    assert len(task.items) == 7  # 3 anatomy + 4 astronomy
    by_id = {it.item_id: it for it in task.items}
    q = by_id["astronomy/1"]
    assert q.question.startswith("What is the approximate distance from the Earth to the Sun, in astronomical")
    assert q.options == ["0.5", "1", "5", "10"] and q.label == 1 and q.subject == "astronomy"
    assert by_id["astronomy/3"].options[1] == "The changing angle at which we see the Moon's sunlit half"
    assert by_id["anatomy/0"].label == 2
    assert {it.subject for it in task.fewshot} == {"anatomy", "astronomy"} and len(task.fewshot) == 3


def test_mmlu_csv_subject_filter_and_single_file():
    task = load_task(FIX / "mmlu" / "data", subjects="anatomy")
    assert {it.subject for it in task.items} == {"anatomy"}
    assert {it.subject for it in task.fewshot} == {"anatomy"}
    single = load_task(FIX / "mmlu" / "data" / "test" / "astronomy_test.csv")
    assert len(single.items) == 4 and len(single.fewshot) == 2


def test_mmlu_fewshot_takes_dev_of_same_subject_in_order():
    task = load_task(FIX / "mmlu" / "data")
    item = next(it for it in task.items if it.subject == "astronomy")
    shots = select_fewshot(task, item, 2)
    assert [s.question for s in shots] == ["What is the largest planet in the Solar System?",
                                           "Which galaxy contains the Solar System?"]
    prompt = mc_choice_prompt(item, shots)
    assert prompt.startswith("The following are multiple choice questions (with answers) about astronomy.\n\n")
    assert "A. Earth\nB. Saturn\nC. Jupiter\nD. Neptune\nAnswer: C\n\n" in prompt
    assert prompt.endswith(item.question + "\nA. Mercury\nB. Venus\nC. Earth\nD. Mars\nAnswer:")


def test_arc_hf_and_original_nested_format():
    items = load_task(FIX / "arc.jsonl").items
    assert [it.item_id for it in items] == ["Mercury_7175875", "NYSEDREGENTS_2015_4_8", "ARC_nested_1"]
    assert items[0].label == 2 and items[0].options[2] == "Planetary days will become shorter."
    assert items[1].label == 1 and items[1].options[1] == "the Sun"  # numeric answer keys "1".."4"
    assert items[2].options == ["meter", "gram", "second"] and items[2].label == 1


@pytest.mark.parametrize(
    ("name", "n", "first_label", "first_gold"),
    [
        ("sciq.jsonl", 2, 3, "mesophilic organisms"),
        ("piqa.jsonl", 2, 0, "Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips."),
        ("hellaswag.jsonl", 2, 3, "starts pulling up roofing on a roof."),
        ("medmcqa.jsonl", 1, 2, "Vitamin D"),
        ("native_mc.jsonl", 3, 1, "5"),
    ],
)
def test_generic_mc_formats(name, n, first_label, first_gold):
    items = load_task(FIX / name).items
    assert len(items) == n
    assert all(isinstance(it, MCItem) for it in items)
    assert items[0].label == first_label and items[0].options[items[0].label] == first_gold


def test_hellaswag_query_and_markup_as_lm_eval_builds_them():
    first, wikihow = load_task(FIX / "hellaswag.jsonl").items
    assert first.question == "Roof shingle removal: A man is sitting on a roof. He"
    assert wikihow.question == "Home and Garden: How to clean a lint trap. Pull out the screen."
    assert wikihow.options[0] == "Brush the lint off with your fingers." and wikihow.label == 0


def test_hf_loader_uses_the_same_spec(monkeypatch):
    """The HF path reads rows through the same MCSpec; datasets.load_dataset is stubbed (no network)."""
    import datasets

    rows = [json.loads(line) for line in (FIX / "piqa.jsonl").read_text().splitlines()]
    calls = []

    def fake_load(path, config=None, split=None, **kw):
        calls.append((path, config, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    task = load_task("piqa")
    assert calls == [("baber/piqa", None, "validation")]  # no train split: k-shot uses other items
    assert [it.label for it in task.items] == [0, 1] and task.fewshot == []


def test_hf_mmlu_category_filters_subjects(monkeypatch):
    import datasets

    rows = [{"question": "q1", "subject": "jurisprudence", "choices": ["a", "b", "c", "d"], "answer": 0},
            {"question": "q2", "subject": "astronomy", "choices": ["a", "b", "c", "d"], "answer": 2}]
    splits = []

    def fake_load(path, config=None, split=None, **kw):
        splits.append((path, config, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    task = load_task("mmlu_stem")
    assert splits == [("cais/mmlu", "all", "test"), ("cais/mmlu", "all", "dev")]
    assert [it.subject for it in task.items] == ["astronomy"] and task.items[0].label == 2
    assert [it.item_id for it in task.items] == ["astronomy/0"]
    assert [it.item_id for it in task.fewshot] == ["fewshot-astronomy/0"]


def test_hf_trex_dedupes_triples_and_skips_object_first_templates(monkeypatch):
    import datasets

    base = json.loads((FIX / "lama_hf.jsonl").read_text())
    rows = [base, dict(base, masked_sentence="Berlin is Germany's capital."),  # same triple, 2nd evidence
            dict(base, uuid="hf-2", sub_label="France", obj_label="Paris"),
            dict(base, uuid="hf-3", predicate_id="P1", template="[Y] was founded in [X] ."),
            dict(base, uuid="hf-4", predicate_id="P37", sub_label="Austria", obj_label="German",
                 template="The official language of [X] is [Y] .")]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list(rows))
    task = load_task("trex")
    assert [(it.subject, it.object, it.relation) for it in task.items] == [
        ("Germany", "Berlin", "P36"), ("France", "Paris", "P36"), ("Austria", "German", "P37")]
    assert [it.item_id for it in task.items] == ["hf-1", "hf-2", "hf-4"]
    assert [it.item_id for it in load_task("trex", relations="P37").items] == ["hf-4"]


def test_hf_clm_names(monkeypatch):
    import datasets

    calls = []

    def fake_load(path, config=None, split=None, **kw):
        calls.append((path, config, split))
        if path == "EleutherAI/wikitext_document_level":
            return datasets.Dataset.from_list([{"page": " = A = \n text a"}, {"page": ""}, {"page": " = B = \n b"}])
        return datasets.Dataset.from_list([{"text": "doc one"}, {"text": "doc two"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    wiki = load_task("wikitext:wikitext-2-raw-v1")
    assert calls[-1] == ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test")
    assert [d.text for d in wiki.items] == [" = A = \n text a", " = B = \n b"]
    pile = load_task("pile-10k")
    assert calls[-1] == ("NeelNanda/pile-10k", None, "train") and len(pile.items) == 2
    load_task("hf-clm:org/corpus:cfg", split="validation")
    assert calls[-1] == ("org/corpus", "cfg", "validation")


def test_hf_unreachable_is_one_clear_error(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'allenai/ai2_arc' on the Hub (offline mode is enabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(CalibenchError, match=r"cannot load Hugging Face dataset allenai/ai2_arc:ARC-Easy.*local file"):
        load_task("arc_easy")


# --- facts ---------------------------------------------------------------------------------------


def test_lama_trex_with_relations_file():
    items = load_task(FIX / "lama" / "TREx" / "P36.jsonl").items
    assert [(it.subject, it.object, it.relation) for it in items] == [("France", "Paris", "P36"),
                                                                      ("Denmark", "Copenhagen", "P36")]
    assert items[0].template == "The capital of [X] is [Y] ." and items[0].item_id == "a1b2c3d4-0001"
    assert fact_prompt(items[0]) == "The capital of France is"


def test_lama_hf_row_with_template_and_native_facts():
    hf = load_task(FIX / "lama_hf.jsonl").items[0]
    assert hf.object == "Berlin" and hf.aliases == ["Berlin, Germany"]
    native = load_task(FIX / "native_facts.jsonl").items
    assert isinstance(native[0], FactItem) and native[0].aliases == ["Tokio"] and native[1].aliases == []
    assert fact_prompt(native[1]) == "The capital of Kenya is"


def test_lama_without_template_names_the_fix(tmp_path):
    shutil.copy(FIX / "lama" / "TREx" / "P37.jsonl", tmp_path / "P37.jsonl")
    with pytest.raises(CalibenchError, match=r"P37.jsonl:1: no template for relation P37.*relations"):
        load_task(tmp_path / "P37.jsonl")
    task = load_task(tmp_path / "P37.jsonl", relations=str(FIX / "lama" / "relations.jsonl"))
    assert fact_prompt(task.items[0]) == "The official language of France is"


# --- CLM -----------------------------------------------------------------------------------------


def test_clm_txt_and_jsonl():
    whole = load_task(FIX / "text.txt")
    assert whole.kind == "clm" and len(whole.items) == 1 and "second paragraph" in whole.items[0].text
    paras = load_task(FIX / "text.txt", split_paragraphs=True).items
    assert [d.text for d in paras] == ["The first paragraph of a small text file.\nIt has two lines.",
                                       "A second paragraph follows after a blank line."]
    docs = load_task(FIX / "docs.jsonl").items
    assert [d.item_id for d in docs] == ["d1", "d2"] and all(isinstance(d, CLMDoc) for d in docs)


def test_wikitext_rows_regrouped_into_articles():
    from calibench.tasks.clm import wikitext_articles

    lines = ["", " = Alpha = \n", "", " Alpha is a letter . \n", " = = History = = \n", " Old . \n",
             " = Beta = \n", " Beta too . \n"]
    arts = wikitext_articles(lines)
    assert len(arts) == 2 and arts[0].startswith("= Alpha =") and "History" in arts[0] and "Beta too" in arts[1]


# --- built-in world tasks ------------------------------------------------------------------------


def test_world_facts_are_real_and_several_hundred():
    task = load_task("world-facts")
    assert task.kind == "facts" and len(task.items) >= 500
    by = {it.item_id: it for it in task.items}
    assert by["FRA/capital"].object == "Paris"
    assert by["JPN/capital"].object == "Tokyo"
    assert by["DEU/language"].object == "German"
    assert by["BRA/language"].object == "Portuguese"
    assert by["FRA/currency"].object == "euro" and "EUR" in by["FRA/currency"].aliases
    assert by["KEN/region"].object == "Africa"
    assert by["COL/capital"].object == "Bogotá" and "Bogota" in by["COL/capital"].aliases
    # several official languages: every one is accepted and the template says "One ..."
    che = by["CHE/language"]
    assert che.template.startswith("One official language") and {"French", "Italian"} <= set(che.aliases)
    assert fact_prompt(by["FRA/capital"]) == "The capital of France is"
    assert fact_prompt(by["USA/capital"]) == "The capital of the United States is"
    assert {it.relation for it in task.items} == {"capital", "region", "subregion", "language", "currency"}


def test_world_facts_relation_filter_and_unknown_relation():
    caps = load_task("world-facts", relations="capital").items
    assert len(caps) > 150 and {it.relation for it in caps} == {"capital"}
    with pytest.raises(CalibenchError, match="unknown world relation"):
        load_task("world-facts", relations="capital,flag")


def test_world_mc_distractors_same_type_never_the_answer():
    from calibench.tasks.world import countries

    task = load_task("world-mc", seed=3)
    facts = {it.item_id: it for it in load_task("world-facts").items}
    values = {rel: {v for c in countries() for v in c.values[rel]} for rel in ("capital", "region", "currency")}
    by_code = {c.code: c for c in countries()}
    assert len(task.items) >= 500
    for it in task.items:
        fact = facts[it.item_id]
        assert len(it.options) == 4 and len(set(it.options)) == 4
        assert it.options[it.label] == fact.object
        right = set(by_code[it.item_id.split("/")[0]].values[fact.relation])
        wrong = [o for i, o in enumerate(it.options) if i != it.label]
        assert not right & set(wrong), it
        if fact.relation in values:
            assert set(it.options) <= values[fact.relation], it
    labels = [it.label for it in task.items]
    assert {0, 1, 2, 3} <= set(labels)  # gold position is shuffled, not always last


def test_world_mc_deterministic_by_seed_and_per_item():
    a = load_task("world-mc", seed=1)
    b = load_task("world-mc", seed=1)
    c = load_task("world-mc", seed=2)
    assert a.items == b.items and a.content_hash == b.content_hash
    assert [it.options for it in a.items] != [it.options for it in c.items]
    assert a.content_hash != c.content_hash
    only_caps = load_task("world-mc", seed=1, relations="capital").items
    full = {it.item_id: it for it in a.items}
    assert all(full[it.item_id] == it for it in only_caps)  # filtering never changes another item


def test_world_clm_is_prose_from_the_facts():
    docs = {d.item_id: d.text for d in load_task("world-clm").items}
    assert len(docs) >= 200
    assert "Paris" in docs["FRA"] and "euro" in docs["FRA"] and "the Americas" in docs["BRA"]
    assert load_task("world-clm", seed=0).content_hash == load_task("world-clm", seed=0).content_hash
    assert load_task("world-clm", seed=0).items != load_task("world-clm", seed=1).items


# --- hash, limit, prompts ------------------------------------------------------------------------


def test_content_hash_stable_and_changes_with_content(tmp_path):
    src = (FIX / "native_mc.jsonl").read_text()
    (tmp_path / "a.jsonl").write_text(src)
    (tmp_path / "b.jsonl").write_text(src)
    (tmp_path / "c.jsonl").write_text(src.replace('"label": 1}', '"label": 0}', 1))
    ha, hb, hc = (load_task(tmp_path / f).content_hash for f in ("a.jsonl", "b.jsonl", "c.jsonl"))
    assert ha == hb and len(ha) == 64
    assert ha != hc
    assert load_task(tmp_path / "a.jsonl", limit=2).content_hash != ha


def test_limit_keeps_first_items():
    task = load_task("world-facts", limit=7)
    assert len(task.items) == 7
    assert task.items == load_task("world-facts").items[:7]


def test_fewshot_never_includes_the_item_and_is_seeded():
    task = load_task("world-mc")
    for item in task.items[:40]:
        shots = select_fewshot(task, item, 3, seed=5)
        assert len(shots) == 3
        assert all(s.item_id != item.item_id and s.question != item.question for s in shots)
        assert all(s.subject == item.subject for s in shots)  # same relation first
        assert shots == select_fewshot(task, item, 3, seed=5)
    item = task.items[0]
    assert select_fewshot(task, item, 3, seed=5) != select_fewshot(task, item, 3, seed=6)
    facts = load_task("world-facts", relations="capital")
    shots = select_fewshot(facts, facts.items[0], 2)
    prompt = fact_prompt(facts.items[0], shots)
    lines = prompt.split("\n")
    assert len(lines) == 3 and lines[0].startswith("The capital of ") and lines[0].endswith(".")
    assert lines[2] == fact_prompt(facts.items[0])


def test_fewshot_pool_too_small_is_an_error():
    task = load_task(FIX / "sciq.jsonl")
    with pytest.raises(CalibenchError, match="only 1 few-shot examples"):
        select_fewshot(task, task.items[0], 2)


def test_continuation_and_choice_formats():
    item = MCItem(item_id="x", question="What is 2 + 3?", options=["4", "5"], label=1)
    assert mc_continuation_context(item) == "Question: What is 2 + 3?\nAnswer:"
    assert mc_continuation_options(item) == [" 4", " 5"]
    assert mc_continuation_options(item, chat=True) == ["4", "5"]
    assert mc_choice_prompt(item) == "What is 2 + 3?\nA. 4\nB. 5\nAnswer:"
    assert mc_choice_letters(item) == [" A", " B"] and mc_choice_letters(item, chat=True) == ["A", "B"]
    shot = MCItem(item_id="y", question="What is 1 + 1?", options=["2", "3"], label=0)
    assert mc_continuation_context(item, [shot]).startswith("Question: What is 1 + 1?\nAnswer: 2\n\nQuestion:")


def test_chat_template_wraps_prompt_as_user_turn():
    from calibench.models.tiny import train_tokenizer

    tok = train_tokenizer(["hello world the capital of France is Paris"] * 3)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    item = MCItem(item_id="x", question="Q?", options=["a", "b"], label=0)
    assert mc_choice_prompt(item, chat_template=tok) == "<|user|>Q?\nA. a\nB. b\nAnswer:\n<|assistant|>"
    tok.chat_template = None
    with pytest.raises(CalibenchError, match="no chat template"):
        mc_choice_prompt(item, chat_template=tok)


# --- bad input -----------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = _write(tmp_path, "bad.jsonl", '{"question": "a", "options": ["x", "y"], "label": 0}\n\n{"question": oops}\n')
    with pytest.raises(CalibenchError, match=r"bad\.jsonl:3: invalid JSON"):
        load_task(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"question": "q", "options": ["only"], "label": 0}', r"needs at least two options, got 1"),
        ('{"question": "q", "options": ["a", "b"], "label": 2}', r"label 2 out of range for 2 options"),
        ('{"question": "q", "options": ["a", "b"], "label": -1}', r"label -1 out of range"),
        ('{"question": "q", "options": ["a", ""], "label": 0}', r"option 1 is empty"),
        ('{"question": "q", "options": ["a", "b"], "label": "x"}', r"label must be an integer"),
        ('{"question": "q", "options": "ab", "label": 0}', r"field 'options' must be a list"),
    ],
)
def test_bad_mc_items_name_file_line(tmp_path, line, message):
    path = _write(tmp_path, "t.jsonl", '{"question": "ok", "options": ["a", "b"], "label": 0}\n' + line + "\n")
    with pytest.raises(CalibenchError, match=r"t\.jsonl:2: .*" + message):
        load_task(path)


def test_bad_mmlu_csv_rows(tmp_path):
    (tmp_path / "test").mkdir()
    _write(tmp_path / "test", "x_test.csv", "q,a,b,c,d,A\nq2,a,b,c,d,E\n")
    with pytest.raises(CalibenchError, match=r"x_test\.csv:2: label 4 out of range for 4 options"):
        load_task(tmp_path)
    _write(tmp_path / "test", "x_test.csv", "q,a,b,c,d,A\nq2,a,b,c,d,7\n")
    with pytest.raises(CalibenchError, match=r"x_test\.csv:2: answer must be a letter"):
        load_task(tmp_path)


def test_bad_facts(tmp_path):
    no_y = _write(tmp_path, "f.jsonl", '{"subject": "A", "relation": "r", "template": "[X] is", "object": "B"}\n')
    with pytest.raises(CalibenchError, match=r"f\.jsonl:1: template must contain \[X\] and \[Y\]"):
        load_task(no_y)
    y_first = _write(tmp_path, "g.jsonl", '{"subject": "A", "relation": "r", "template": "[Y] is in [X].", "object": "B"}\n')
    with pytest.raises(CalibenchError, match=r"g\.jsonl:1: .*puts \[Y\] before \[X\]"):
        load_task(y_first)
    empty_obj = _write(tmp_path, "h.jsonl", '{"subject": "A", "relation": "r", "template": "[X] [Y]", "object": ""}\n')
    with pytest.raises(CalibenchError, match=r"h\.jsonl:1: field 'object' is missing or empty"):
        load_task(empty_obj)


def test_empty_task_and_unknown_name(tmp_path):
    with pytest.raises(CalibenchError, match="no items"):
        load_task(_write(tmp_path, "empty.jsonl", "\n\n"))
    with pytest.raises(CalibenchError, match="has no items"):
        load_task(_write(tmp_path, "blank.txt", "   \n"))
    with pytest.raises(CalibenchError, match=r"unknown task 'no-such-task'.*world-facts"):
        load_task("no-such-task")
    with pytest.raises(CalibenchError, match=r"cannot tell the task format"):
        load_task(_write(tmp_path, "odd.jsonl", '{"foo": 1}\n'))
    with pytest.raises(CalibenchError, match="unknown task format"):
        load_task(FIX / "native_mc.jsonl", format="yaml")
    with pytest.raises(CalibenchError, match=r"unknown task option\(s\) \['subject'\]"):
        load_task(FIX / "mmlu" / "data", subject="anatomy")
    with pytest.raises(CalibenchError, match="limit must be a positive integer"):
        load_task("world-facts", limit=0)
    with pytest.raises(CalibenchError, match=r"unknown MMLU subject or category 'astrology'"):
        mc_mod.mmlu_subjects("astrology")


def test_duplicate_ids_and_lab_without_world(tmp_path):
    dup = _write(tmp_path, "d.jsonl", '{"id": "a", "question": "q", "options": ["x", "y"], "label": 0}\n' * 2)
    with pytest.raises(CalibenchError, match="duplicate item id 'a'"):
        load_task(dup)
    with pytest.raises(CalibenchError, match="needs a world folder"):
        load_task("lab-facts")


def test_lab_names_read_world_folder(tmp_path):
    (tmp_path / "lab-mc.jsonl").write_text(
        '{"id": "mc-1", "question": "Where was X born?", "options": ["A", "B", "C", "D"], "label": 2, '
        '"subject": "X", "relation": "birthplace", "bucket": "rare"}\n')
    task = load_task("lab-mc", world=str(tmp_path))
    assert task.name == "lab-mc" and task.items[0].label == 2
    assert load_task(f"lab-mc:{tmp_path}").content_hash == task.content_hash


def test_world_hashes_identical_in_a_fresh_process_with_other_hash_seed():
    """Seeded draws must not depend on Python's per-process string hashing (PYTHONHASHSEED)."""
    import os
    import subprocess
    import sys

    code = ("from calibench.tasks import load_task; "
            "print(load_task('world-mc', seed=4).content_hash, load_task('world-clm', seed=4).content_hash)")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == [load_task("world-mc", seed=4).content_hash,
                                  load_task("world-clm", seed=4).content_hash]


def test_lm_eval_style_choices_jsonl_is_detected(tmp_path: Path) -> None:
    """{question, choices: [...], label} (lm-eval users' local layout) loads as multiple choice."""
    import json

    path = tmp_path / "lm_eval_task.jsonl"
    rows = [{"id": "a", "question": "2 + 3?", "choices": ["4", "5", "6"], "label": 1},
            {"id": "b", "question": "Capital of Peru?", "choices": ["Lima", "Quito"], "label": 0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    task = load_task(str(path))
    assert task.kind == "mc"
    assert [(i.item_id, i.question, i.options, i.label) for i in task.items] == [
        ("a", "2 + 3?", ["4", "5", "6"], 1), ("b", "Capital of Peru?", ["Lima", "Quito"], 0)]
    assert load_task(str(path), format="choices").items == task.items
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "choices": ["x", "y"], "label": 5}) + "\n", encoding="utf-8")
    with pytest.raises(CalibenchError, match="label"):
        load_task(str(bad))


@pytest.mark.parametrize("name", ["corpus.txt", "items.jsonl"])
def test_non_utf8_task_file_is_one_clear_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(CalibenchError, match=rf"{name}: not UTF-8 text \(invalid continuation byte at byte"):
        load_task(str(path), format="clm")
