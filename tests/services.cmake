# The services (issue 6): common/server units, the decoder scheduler in-process, and the real
# encoder_service/decoder_service binaries on loopback. Select them with `ctest -L services`.
if(TARGET icae_server_model)
  icae_add_test(server_common_test SOURCES unit/server_common_test.cc
    LIBS icae_server icae_server_model LABELS unit services)
endif()
if(TARGET icae_server_model)
  # What the service tests share (tests/testing/): request builders, in-process reference
  # generation, status assertions.
  add_library(icae_test_testing STATIC testing/requests.cc testing/reference.cc)
  target_link_libraries(icae_test_testing PUBLIC icae_server_model icae_test_util GTest::gmock)
endif()
if(TARGET icae_decoder AND TARGET icae_encoder)
  icae_add_test(server_scheduler_test SOURCES unit/server_scheduler_test.cc
    LIBS icae_decoder icae_encoder icae_test_testing LABELS unit services)
endif()
if(TARGET encoder_service AND TARGET decoder_service)
  icae_add_test(services_test SOURCES integration/services_test.cc
    LIBS icae_server_model icae_server icae_test_testing LABELS integration services)
  add_dependencies(services_test encoder_service decoder_service icae)
  icae_add_test(hostile_client_test SOURCES integration/hostile_client_test.cc
    LIBS icae_server icae_slot_store icae_test_testing LABELS integration services)
  add_dependencies(hostile_client_test encoder_service decoder_service)
endif()
