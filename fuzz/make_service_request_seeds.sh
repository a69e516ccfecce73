#!/usr/bin/env bash
# Writes the seed corpus of the service_request fuzz target (fuzz/corpus/service_request/):
# each seed is one byte choosing the message (0 = EncodeRequest, 1 = GenerateRequest) and the
# message serialized by protoc from the text format below. Valid requests of every shape the
# cores accept (text / ids, slot IDs / raw context, each mode, sampling and stopping set) and
# a few just past a bound, so the fuzzer starts inside and at the edges of the validation.
set -euo pipefail
cd "$(dirname "$0")/.."
out=fuzz/corpus/service_request
proto=icae/v1/icae.proto
mkdir -p "$out"
rm -f "$out"/*
seed() {  # NAME KIND(0|1) MESSAGE-TYPE TEXT-FORMAT
  { printf "\\x0$2"; protoc --proto_path=proto --encode="icae.v1.$3" "$proto" <<<"$4"; } \
    >"$out/$1"
}
slot=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
seed encode_text 0 EncodeRequest 'request_id: "r1" text: "Once upon a time, the cat sat on a mat."'
seed encode_ids 0 EncodeRequest 'token_ids { ids: [1, 300, 301, 302, 2] } return_slots: true'
seed encode_utf8 0 EncodeRequest 'text: "\303\251t\303\251 \342\226\201 \360\237\230\200"'
seed encode_bad_id 0 EncodeRequest 'token_ids { ids: [1, 5, 100000] }'
seed generate_slots 1 GenerateRequest "request_id: \"g1\" slot_ids: \"$slot\" prompt_text: \"What did the cat do?\" mode: MODE_INSTRUCT stopping { max_new_tokens: 8 }"
seed generate_two_slots 1 GenerateRequest "slot_ids: \"$slot\" slot_ids: \"$slot\" mode: MODE_AUTOENCODE"
seed generate_context 1 GenerateRequest 'context_text: "the cat sat on the mat" prompt_ids { ids: [300, 301] } mode: MODE_CONTINUE'
seed generate_context_ids 1 GenerateRequest 'context_ids { ids: [1, 40, 41, 42] } mode: MODE_RAW'
seed generate_sampling 1 GenerateRequest "slot_ids: \"$slot\" prompt_text: \"tell\" sampling { temperature: 0.8 top_p: 0.9 top_k: 20 seed: 7 repetition_penalty: 1.2 } stopping { max_new_tokens: 16 stop_sequences: \"the\" stop_sequences: \".\" stop_token_ids: [2, 300] ignore_eos: true }"
seed generate_bad_slot 1 GenerateRequest 'slot_ids: "not-a-slot-id" prompt_text: "x"'
seed generate_autoencode_prompt 1 GenerateRequest 'context_text: "the cat sat on the mat" prompt_ids { ids: [300, 301] } mode: MODE_AUTOENCODE'
