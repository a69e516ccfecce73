# deploy/ (issue 7): Kubernetes manifests render, YAML lints, the manifests' flags exist in the
# binaries, and the Grafana dashboard / autoscaler metrics exist on the running services
# (deploy/local/cluster.sh: Redis + 2 encoders + 2 decoders). All through
# scripts/check-deploy.sh; select them with `ctest -L deploy`. A missing tool (kubectl,
# yamllint, redis-server) skips (exit 77) unless ICAE_REQUIRE_DEPLOY_TOOLS=1 or
# ICAE_REQUIRE_REDIS=1, as in CI.
set(_icae_check_deploy ${PROJECT_SOURCE_DIR}/scripts/check-deploy.sh)

add_test(NAME deploy_kustomize_render
  COMMAND ${_icae_check_deploy} render ${CMAKE_CURRENT_BINARY_DIR}/deploy-rendered)
add_test(NAME deploy_yamllint COMMAND ${_icae_check_deploy} lint)
set_tests_properties(deploy_kustomize_render deploy_yamllint PROPERTIES
  LABELS "deploy;unit" SKIP_RETURN_CODE 77 TIMEOUT 120)

if(TARGET encoder_service AND TARGET decoder_service)
  add_test(NAME deploy_manifest_flags COMMAND ${_icae_check_deploy} flags ${PROJECT_BINARY_DIR})
  set_tests_properties(deploy_manifest_flags PROPERTIES
    LABELS "deploy;integration" SKIP_RETURN_CODE 77 TIMEOUT 120)
  if(TARGET icae)
    add_test(NAME deploy_local_cluster_metrics
      COMMAND ${_icae_check_deploy} metrics ${PROJECT_BINARY_DIR})
    # Four service processes and a Redis on loopback: keep it away from other heavy tests.
    set_tests_properties(deploy_local_cluster_metrics PROPERTIES
      LABELS "deploy;integration" SKIP_RETURN_CODE 77 TIMEOUT 300 PROCESSORS 2)
  endif()
endif()
