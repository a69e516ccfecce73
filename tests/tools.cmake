# The `icae` command line as a whole (per-area command tests live with their area).
icae_add_test(cli_numbers_test SOURCES integration/cli_numbers_test.cc LIBS icae_util
  LABELS integration)
if(TARGET icae)
  add_dependencies(cli_numbers_test icae)
endif()
if(ICAE_BUILD_SERVICES)
  target_compile_definitions(cli_numbers_test PRIVATE ICAE_TEST_SERVICES)
endif()
# --device on every model command and both services (issue 17).
icae_add_test(device_cli_test SOURCES integration/device_cli_test.cc LIBS icae_util
  LABELS integration)
if(TARGET icae)
  add_dependencies(device_cli_test icae)
endif()
if(ICAE_BUILD_SERVICES)
  target_compile_definitions(device_cli_test PRIVATE ICAE_TEST_SERVICES)
  add_dependencies(device_cli_test encoder_service decoder_service)
endif()
