# common/icae: conformance against getao/icae v2 golden vectors, and bad input.
icae_add_test(icae_conformance_test SOURCES conformance/icae_conformance_test.cc
  LIBS icae_icae nlohmann_json::nlohmann_json LABELS conformance)
icae_add_test(icae_test SOURCES unit/icae_test.cc LIBS icae_icae)
