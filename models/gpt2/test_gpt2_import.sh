#!/bin/sh
# test_gpt2_import.sh — gpt2_import's handling of checkpoint layouts and bad
# input, on the tiny checkpoint: a sharded copy (model.safetensors.index.json)
# and a copy without the "transformer." name prefix (as openai-community/gpt2
# stores it) import to the same circuit as the single file; activation_function
# gelu gives the exact GELU; missing or unreadable files
# exit 3, bad or unsupported checkpoint content exits 1, bad options exit 2,
# each with a message naming the problem.
# usage: test_gpt2_import.sh GPT2_IMPORT TINY_MODEL_DIR WORKDIR
set -eu
[ $# -eq 3 ] || { echo "usage: test_gpt2_import.sh GPT2_IMPORT TINY_MODEL_DIR WORKDIR" >&2; exit 2; }
import=$1 tiny=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
tiny=$(cd "$tiny" && pwd)

# expect CODE PATTERN ARGS...: gpt2_import ARGS exits CODE and its stderr matches PATTERN
expect() {
  code=$1 pattern=$2
  shift 2
  set +e
  "$import" "$@" > "$work/out.txt" 2> "$work/err.txt"
  got=$?
  set -e
  cat "$work/err.txt"
  if [ $got -ne "$code" ] || ! grep -q -e "$pattern" "$work/err.txt"; then
    echo "FAIL: gpt2_import $*: expected exit $code and a message matching '$pattern', got exit $got" >&2
    exit 1
  fi
}

# a sharded checkpoint: the index maps every tensor to one shard
mkdir -p "$work/sharded"
cp "$tiny/config.json" "$work/sharded/"
ln -s "$tiny/model.safetensors" "$work/sharded/model-00001-of-00001.safetensors"
{
  echo '{"metadata": {"total_size": 453632}, "weight_map": {'
  for l in 0 1 2 3 4; do
    for t in attn.c_attn.bias attn.c_attn.weight attn.c_proj.bias attn.c_proj.weight ln_1.bias ln_1.weight \
      ln_2.bias ln_2.weight mlp.c_fc.bias mlp.c_fc.weight mlp.c_proj.bias mlp.c_proj.weight; do
      echo "\"transformer.h.$l.$t\": \"model-00001-of-00001.safetensors\","
    done
  done
  for t in ln_f.bias ln_f.weight wpe.weight; do echo "\"transformer.$t\": \"model-00001-of-00001.safetensors\","; done
  echo '"transformer.wte.weight": "model-00001-of-00001.safetensors"}}'
} > "$work/sharded/model.safetensors.index.json"
set -x
"$import" --seq 8 "$tiny" "$work/single"
"$import" --seq 8 "$work/sharded" "$work/fromshards"
cmp "$work/single/gpt2.circ" "$work/fromshards/gpt2.circ"
"$import" --flat --seq 8 "$tiny" "$work/single"
"$import" --flat --seq 8 "$work/sharded" "$work/fromshards"
cmp "$work/single/gpt2_flat.circ" "$work/fromshards/gpt2_flat.circ"

# tensor names without "transformer.": the same header with the prefix removed
# (data offsets are relative to the data section, so the payload is unchanged)
n=$(od -An -tu8 -N8 "$tiny/model.safetensors" | tr -d ' ')
header=$(dd if="$tiny/model.safetensors" bs=1 skip=8 count="$n" 2> /dev/null | sed 's/"transformer\./"/g')
len=${#header}
mkdir -p "$work/noprefix"
cp "$tiny/config.json" "$work/noprefix/"
{
  i=0
  while [ $i -lt 8 ]; do printf "\\$(printf %03o $(((len >> (8 * i)) & 255)))"; i=$((i + 1)); done
  printf '%s' "$header"
  tail -c +$((9 + n)) "$tiny/model.safetensors"
} > "$work/noprefix/model.safetensors"
"$import" --seq 8 "$work/noprefix" "$work/noprefix_out"
cmp "$work/single/gpt2.circ" "$work/noprefix_out/gpt2.circ"

# activation_function gelu: the exact (erf) GELU
# ckpt NAME SED-EXPR: a copy of the tiny checkpoint with config.json edited
ckpt() {
  mkdir -p "$work/$1"
  sed "$2" "$tiny/config.json" > "$work/$1/config.json"
  ln -sf "$tiny/model.safetensors" "$work/$1/model.safetensors"
}
ckpt gelu 's/"activation_function": "gelu_new"/"activation_function": "gelu"/'
"$import" --seq 8 "$work/gelu" "$work/gelu_out"
grep -q "'m.act' GeneralFunction gelu\$" "$work/gelu_out/gpt2.circ"

# I/O: exit 3
expect 3 "cannot open $work/nonexistent" "$work/nonexistent" "$work/o"
expect 3 "not a directory" "$tiny/config.json" "$work/o"
mkdir -p "$work/empty"
expect 3 "cannot open $work/empty/config.json" "$work/empty" "$work/o"
mkdir -p "$work/noweights"
cp "$tiny/config.json" "$work/noweights/"
expect 3 "expected model.safetensors or model.safetensors.index.json" "$work/noweights" "$work/o"
expect 3 "cannot create directory" "$tiny" "$tiny/config.json/out"
# bad or unsupported content: exit 1
ckpt badjson 's/"n_embd": 32,/"n_embd": 32/'
expect 1 "config.json: malformed JSON" "$work/badjson" "$work/o"
ckpt noembd '/"n_embd"/d'
expect 1 'missing "n_embd"' "$work/noembd" "$work/o"
ckpt swish 's/"activation_function": "gelu_new"/"activation_function": "swish"/'
expect 1 'unsupported activation_function "swish"' "$work/swish" "$work/o"
ckpt layers6 's/"n_layer": 5/"n_layer": 6/'
expect 1 "no tensor named 'transformer.h.5.attn.c_attn.weight'" "$work/layers6" "$work/o"
ckpt embd64 's/"n_embd": 32/"n_embd": 64/'
expect 1 "has shape \[32,96\], expected \[64,192\]" "$work/embd64" "$work/o"
ckpt heads5 's/"n_head": 4/"n_head": 5/'
expect 1 "n_embd 32 is not a multiple of n_head 5" "$work/heads5" "$work/o"
ckpt invlayer 's/"scale_attn_by_inverse_layer_idx": false/"scale_attn_by_inverse_layer_idx": true/'
expect 1 "unsupported config: \"scale_attn_by_inverse_layer_idx\"" "$work/invlayer" "$work/o"
ckpt untied 's/"n_layer": 5/"tie_word_embeddings": false, "n_layer": 5/'
expect 1 "no tensor named 'lm_head.weight'" "$work/untied" "$work/o"
ckpt bert 's/"model_type": "gpt2"/"model_type": "bert"/'
expect 1 'unsupported model_type "bert"' "$work/bert" "$work/o"
# usage: exit 2
expect 2 "--seq 513 exceeds the model's n_positions 512" --seq 513 "$tiny" "$work/o"
expect 2 "--seq expects a number from 1 to 1024" --seq 0 "$tiny" "$work/o"
expect 2 "--loss needs --seq 2 or more" --loss --seq 1 "$tiny" "$work/o"
expect 2 "--loss needs --seq 2 or more" --loss "$tiny" "$work/o"
expect 2 "unknown option '--bogus'" --bogus "$tiny" "$work/o"
expect 2 "expected HF_DIR and OUT_DIR" "$tiny"
