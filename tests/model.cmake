# common/model: unit tests, bad-input tests and conformance against the shared references.
icae_add_test(model_test SOURCES unit/model_test.cc LIBS icae_model nlohmann_json::nlohmann_json)
icae_add_test(safetensors_test SOURCES unit/safetensors_test.cc LIBS icae_model)
icae_add_test(model_conformance_test SOURCES conformance/model_conformance_test.cc
  LIBS icae_model nlohmann_json::nlohmann_json LABELS conformance)
# Device placement (issue 17): --device parsing, CUDA refused clearly on a CPU LibTorch, CPU
# kernels only for CPU tensors, explicit cpu == default.
icae_add_test(device_test SOURCES unit/device_test.cc LIBS icae_model)
