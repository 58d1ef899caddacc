// Test runner. A test case that needs a GPU and finds none counts itself as skipped
// (GAN_REQUIRE_GPU); when every case that ran was skipped the process exits 77, which ctest
// reports as "Skipped" (SKIP_RETURN_CODE), so a machine without a GPU shows which cases did not
// run.
#define CATCH_CONFIG_RUNNER
#include <cstdlib>
#include <string>

#include <catch2/catch.hpp>

#include "engine/device.h"
#include "tests/harness.h"

namespace {

int g_started = 0;

struct CaseCounter : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(Catch::TestCaseInfo const&) override { ++g_started; }
};

}  // namespace

CATCH_REGISTER_LISTENER(CaseCounter)

int main(int argc, char** argv) {
  Catch::Session session;
  // --interp-seed N: the interpreter's schedule seed (as GAN_INTERP_SEED=N; ctest's interp_s1
  // and interp_s2 runs pass it).
  int interp_seed = 0;
  session.cli(session.cli() | Catch::clara::Opt(interp_seed, "seed")["--interp-seed"](
                                  "the interpreter's schedule seed (GAN_INTERP_SEED)"));
  if (int rc = session.applyCommandLine(argc, argv)) return rc;
  if (interp_seed > 0) setenv("GAN_INTERP_SEED", std::to_string(interp_seed).c_str(), 1);
  const int rc = session.run();
  if (rc == 0 && g_started > 0 && gan::test::skipped_cases() == g_started) return 77;
  return rc;
}
