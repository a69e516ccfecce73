# Tokenizer tests: golden ids (llama2.c, SentencePiece/Mistral), corrupt files, streaming
# decode, spm_encode cross-checks (when the sentencepiece tools are installed), the CLI.
# The CLI tests run the `icae` tool from the same build and skip if it has not been built;
# there is deliberately no build dependency on it, so the tokenizer tests build on their own.
icae_add_test(tokenizer_test
  SOURCES unit/tokenizer_test.cc
  LIBS icae_tokenizer nlohmann_json::nlohmann_json absl::strings absl::str_format
  LABELS unit)
