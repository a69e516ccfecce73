# common/model: unit tests, bad-input tests and conformance against the shared references.
icae_add_test(model_test SOURCES unit/model_test.cc LIBS icae_model nlohmann_json::nlohmann_json)
icae_add_test(safetensors_test SOURCES unit/safetensors_test.cc LIBS icae_model)
icae_add_test(model_conformance_test SOURCES conformance/model_conformance_test.cc
  LIBS icae_model nlohmann_json::nlohmann_json LABELS conformance)
