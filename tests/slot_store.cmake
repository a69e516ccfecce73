# common/slot_store: records, IDs, fingerprints, URIs and every backend. The Redis tests start
# their own redis-server on a free loopback port (the redis-cluster ones a 3-master +
# 3-replica cluster, formed with redis-cli); without one installed they skip, unless
# ICAE_REQUIRE_REDIS=1 (CI), where they fail. Every suite is named SlotStore*, so
# `ctest -R SlotStore` selects them all. One label each: icae_add_test cannot pass a list of
# labels through gtest_discover_tests yet (the second label becomes a property name).
if(TARGET icae_slot_store)
  icae_add_test(slot_store_record_test SOURCES unit/slot_store_record_test.cc
    LIBS icae_slot_store LABELS unit)
  icae_add_test(slot_store_memory_test SOURCES unit/slot_store_memory_test.cc
    LIBS icae_slot_store LABELS unit)
  icae_add_test(slot_store_file_test SOURCES unit/slot_store_file_test.cc
    LIBS icae_slot_store LABELS unit)
  icae_add_test(slot_store_redis_test SOURCES integration/slot_store_redis_test.cc
    LIBS icae_slot_store LABELS integration)
  icae_add_test(slot_store_redis_cluster_unit_test
    SOURCES unit/slot_store_redis_cluster_unit_test.cc LIBS icae_slot_store LABELS unit)
  # Each test forms its own 3 + 3 node cluster on loopback (a few seconds).
  icae_add_test(slot_store_redis_cluster_test SOURCES integration/slot_store_redis_cluster_test.cc
    LIBS icae_slot_store LABELS integration)
  icae_add_test(slot_store_conformance_test SOURCES integration/slot_store_conformance_test.cc
    LIBS icae_slot_store LABELS integration)
endif()
