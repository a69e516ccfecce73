# The `icae` command line as a whole (per-area command tests live with their area).
icae_add_test(cli_numbers_test SOURCES integration/cli_numbers_test.cc LIBS icae_util
  LABELS integration)
if(TARGET icae)
  add_dependencies(cli_numbers_test icae)
endif()
if(ICAE_BUILD_SERVICES)
  target_compile_definitions(cli_numbers_test PRIVATE ICAE_TEST_SERVICES)
endif()
