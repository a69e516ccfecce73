# clients/python (Python client, issue 15): pytest against real services that the tests start
# with `icae up` on the embedded default model. Debian's Python on purpose (/usr/bin/python3:
# python3-grpcio, python3-protobuf, python3-pytest from scripts/install-deps.sh); another
# Python may come first on PATH. The stubs come from the icae_python_stubs build target.
if(TARGET icae AND TARGET icae_python_stubs AND TARGET encoder_service AND TARGET decoder_service)
  add_test(NAME python_client
    COMMAND /usr/bin/python3 -m pytest -q -p no:cacheprovider clients/python
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(python_client PROPERTIES
    LABELS "integration" ENVIRONMENT "ICAE_BIN=$<TARGET_FILE:icae>" TIMEOUT 300 PROCESSORS 2)
elseif(TARGET encoder_service AND NOT TARGET icae_python_stubs)
  message(WARNING "grpc_python_plugin not found (Debian protobuf-compiler-grpc): the Python "
                  "client's stubs and its python_client test are not built")
endif()

# scripts/soak.sh (issue 14): one minute of concurrent clients against Redis + 2 encoders +
# 2 decoders while Redis, a decoder (SIGKILL) and an encoder (SIGTERM) restart; fails on any
# request that did not end in an answer after a careful client's retries, or a cut stream.
if(TARGET icae_python_stubs AND TARGET encoder_service AND TARGET decoder_service)
  add_test(NAME soak_1min
    COMMAND ${PROJECT_SOURCE_DIR}/scripts/soak.sh --minutes 1 --clients 3 --attempts 12
            --build-dir ${PROJECT_BINARY_DIR} --state-dir ${CMAKE_CURRENT_BINARY_DIR}/soak-state)
  set_tests_properties(soak_1min PROPERTIES LABELS "integration" TIMEOUT 400 PROCESSORS 2)
endif()
