# Training and evaluation (common/train, `icae train|eval|data`) and the embedded default model.
icae_add_test(train_loop_test SOURCES unit/train_loop_test.cc LIBS icae_train LABELS unit train)
icae_add_test(train_icae_test SOURCES unit/train_icae_test.cc LIBS icae_train LABELS unit train)
icae_add_test(train_metrics_test SOURCES unit/train_metrics_test.cc LIBS icae_train
  LABELS unit train)
icae_add_test(default_model_test SOURCES integration/default_model_test.cc
  LIBS icae_train icae_util LABELS integration train)
if(TARGET icae)
  add_dependencies(default_model_test icae)
endif()
icae_add_test(train_cli_test SOURCES integration/train_cli_test.cc
  LIBS icae_train icae_util LABELS integration train)
if(TARGET icae)
  add_dependencies(train_cli_test icae)
endif()
