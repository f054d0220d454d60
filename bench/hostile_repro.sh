#!/usr/bin/env bash
# Reproduce the issue-11 audit findings against one checkout: bench/hostile_repro.sh SRC_DIR SCRATCH
# Each line prints: item, exit code, stderr lines, whether a traceback appeared, the last stderr line.
# Everything runs under ulimit -v 3000000 (3 GB); the bombs and special files under timeout 20, the rest 180.
set -u
SRC=${1:?src dir}; W=${2:?scratch dir}
export PYTHONPATH=$SRC HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg OMP_NUM_THREADS=1
PY=/work/main/.venv/bin/python
H=$(cd "$(dirname "$0")/../tests/hostile" && pwd); FIX=$(cd "$H/../fixtures" && pwd)
rm -rf "$W"; mkdir -p "$W"; cd "$W"
printf '#!/bin/sh\nexec %s -c "import sys; from calibench.cli import main; sys.exit(main())" "$@"\n' "$PY" > cb; chmod +x cb
CB=$W/cb
$PY - <<'PY'
from calibench.models.tiny import build_tiny_model
import shutil, torch, json
from pathlib import Path
build_tiny_model(Path("tiny"), ["The capital of France is Paris. " * 20, "Berlin is in Germany. " * 20])
# pickle-only copy
p = Path("pickle"); shutil.copytree("tiny", p)
from safetensors.torch import load_file
torch.save(load_file(p / "model.safetensors"), p / "pytorch_model.bin"); (p / "model.safetensors").unlink()
# auto_map with a stock model_type
a = Path("automap"); shutil.copytree("tiny", a)
cfg = json.loads((a / "config.json").read_text()); cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}
(a / "config.json").write_text(json.dumps(cfg))
# no tokenizer files
n = Path("notok"); shutil.copytree("tiny", n)
for f in n.iterdir():
    if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
        f.unlink()
# truncated safetensors
t = Path("trunc"); shutil.copytree("tiny", t)
b = (t / "model.safetensors").read_bytes(); (t / "model.safetensors").write_bytes(b[: len(b) // 2])
rows = [{"prompt": f"Q{i}: capital of France?", "completion": " Paris"} for i in range(4)]
Path("sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
pairs = [{"prompt": f"Q{i}: capital of France?", "chosen": " Paris", "rejected": " Rome"} for i in range(4)]
Path("pref.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
PY
run() {  # name, command...
  local name=$1; shift
  ( ulimit -v 3000000; timeout "${T:-180}" "$@" ) >"$W/$name.out" 2>"$W/$name.err"; local rc=$?
  local tb=no; grep -q "Traceback" "$W/$name.err" && tb=yes
  printf '%-34s rc=%-3s stderr_lines=%-4s traceback=%-3s | %s\n' "$name" "$rc" "$(wc -l <"$W/$name.err")" "$tb" \
    "$(grep -v '^\s*$' "$W/$name.err" | tail -1 | cut -c1-150)"
}
TASKS=world-mc,world-facts
run 1-sft-pickle-base        $CB train sft --base pickle --data sft.jsonl --out sft-out --epochs 1 --eval-items 0 --batch-size 2
run 1-eval-pickle            $CB eval --model-args pretrained=pickle --tasks world-mc --limit 2 --out e1 --quiet --bootstrap 0 --no-figures
T=20 run 2-yaml-alias-bomb        $CB study plan "$H/alias_bomb.yaml"
run 3-eval-run1              $CB eval --model-args pretrained=tiny --tasks world-mc --limit 4 --out run1 --quiet --bootstrap 0 --no-figures
run 3-eval-run2-choice-only  $CB eval --model-args pretrained=tiny --tasks world-mc --limit 4 --methods choice --out run2 --quiet --bootstrap 0 --no-figures
# the mix a kill between files left on the old code: run2's records.parquet with run1's metrics.json/config.json
cp -r run1 mixed; cp run2/records.parquet mixed/records.parquet
run 3-compare-mixed-folder   $CB compare run1 mixed --bootstrap 10 --out cmp
run 4-diagram-proc           $CB metrics "$H/good.jsonl" --diagram /proc/x.png --bootstrap 0
run 4-out-is-file            $CB eval --model-args pretrained=tiny --tasks world-mc --limit 2 --out "$H/good.jsonl" --quiet
run 4-truncated-safetensors  $CB eval --model-args pretrained=trunc --tasks world-mc --limit 2 --out e2 --quiet --bootstrap 0 --no-figures
run 4-train-lr-negative      $CB train sft --base tiny --data sft.jsonl --out s2 --lr -1 --epochs 1 --eval-items 0
run 4-train-batch-zero       $CB train sft --base tiny --data sft.jsonl --out s3 --batch-size 0 --epochs 1 --eval-items 0
T=20 run 5-n-bins-bomb            $CB metrics "$H/good.jsonl" --n-bins 10000000 --bootstrap 10
run 6-confidence-string      $CB metrics "$H/confidence_string.jsonl" --bootstrap 0
run 6-confidence-bool        $CB metrics "$H/confidence_bool.jsonl" --bootstrap 0
run 6-probs-json-string      $CB metrics "$H/probs_string.jsonl" --bootstrap 0
run 6-duplicate-item         $CB metrics "$H/duplicate_item.jsonl" --bootstrap 0
run 6-correct-contradicts    $CB metrics "$H/correct_contradicts.jsonl" --bootstrap 0
run 6-confidence-not-max     $CB metrics "$H/confidence_not_max.jsonl" --bootstrap 0
run 6-duplicate-json-key     $CB metrics "$H/duplicate_key.jsonl" --bootstrap 0
run 6-duplicate-yaml-key     $CB study plan "$H/duplicate_key.yaml"
run 6-mixed-classes          $CB metrics "$H/mixed_classes.jsonl" --bootstrap 0
run 6-causal-lm-as-reward    $CB train rl --policy tiny --reward-model tiny --data pref.jsonl --out rl --steps 1 --eval-items 0 --batch-size 4 --num-generations 2
run 7-auto-map               $CB eval --model-args pretrained=automap --tasks world-mc --limit 2 --out e3 --quiet --bootstrap 0 --no-figures
run 8-missing-confidence     $CB metrics "$H/missing_confidence.jsonl" --bootstrap 0
run 8-no-tokenizer           $CB eval --model-args pretrained=notok --tasks world-mc --limit 2 --out e4 --quiet --bootstrap 0 --no-figures
mkdir -p corrupt-study; head -c 4096 /dev/urandom > corrupt-study/study.duckdb
printf 'name: s\nmethods: [choice]\ntasks: [world-mc]\nmodels: [{name: m, synthetic: {}}]\n' > ok.yaml
run 8-corrupt-duckdb         $CB study plan ok.yaml --out corrupt-study
run 8-from-lm-eval-nbins     $CB from-lm-eval "$FIX/lm_eval" --out lme --n-bins 0
echo "   (from-lm-eval wrote records before checking options: $( [ -e lme/records.parquet ] && echo yes || echo no ))"
mkfifo fifo.jsonl
T=20 run 9-fifo-records           $CB metrics fifo.jsonl --bootstrap 0
ln -s /dev/zero zero.jsonl
T=20 run 9-dev-zero-records       $CB metrics zero.jsonl --bootstrap 0
