# tandem_add_test(NAME LABEL src...): one GoogleTest binary, registered with ctest under LABEL.
include(GoogleTest)
function(tandem_add_test name label)
  add_executable(${name} ${ARGN})
  target_link_libraries(${name} PRIVATE tandem_lib GTest::gtest GTest::gtest_main)
  gtest_discover_tests(${name} PROPERTIES LABELS ${label} DISCOVERY_TIMEOUT 60
    WORKING_DIRECTORY ${PROJECT_BINARY_DIR})
endfunction()
