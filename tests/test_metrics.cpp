// Sample-quality metrics against the reference packages (pytorch-fid, torch-fidelity, prdc) on the
// fixed feature sets of tests/fixtures/metrics_known_answers.json
// (tools/scripts/fixtures/make_metrics_fixture.py regenerates it), and properties that need no
// fixture.
#include <catch2/catch.hpp>

#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "engine/device.h"
#include "tests/harness.h"
#include "tools/eval/metrics.h"

namespace {

using gan::Device;
using gan::eval::Matrix;

nlohmann::json fixture() {
  std::ifstream f(gan::test::fixture_path("metrics_known_answers.json"));
  REQUIRE(f.good());
  return nlohmann::json::parse(f);
}

Matrix matrix(const nlohmann::json& rows, int64_t limit = -1) {
  Matrix m;
  m.rows = limit >= 0 ? limit : int64_t(rows.size());
  m.cols = int64_t(rows.at(0).size());
  for (int64_t i = 0; i < m.rows; ++i)
    for (const auto& v : rows.at(size_t(i))) m.values.push_back(float(v.get<double>()));
  return m;
}

Matrix gaussian_rows(int64_t n, int64_t d, double shift, double scale, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g;
  Matrix m;
  m.rows = n, m.cols = d;
  for (int64_t i = 0; i < n * d; ++i) m.values.push_back(float(shift + scale * g(rng)));
  return m;
}

void check_known_answers(Device dev, double tol) {
  const nlohmann::json j = fixture();
  const Matrix real = matrix(j["real"]), fake = matrix(j["fake"]), real100 = matrix(j["real"], 100);

  const gan::eval::Frechet fd =
      gan::eval::frechet_distance(gan::eval::fit_gaussian(real), gan::eval::fit_gaussian(fake));
  CHECK(fd.distance == Approx(j["fd"].get<double>()).epsilon(1e-9));  // host double: no GEMM
  CHECK(fd.trace_sqrt ==
        Approx(j["fd_parts"]["trace_sqrt_sigma_product"].get<double>()).epsilon(1e-9));

  // Subsets of the whole (equal-size) sets: torch-fidelity's KID is the full-set estimator.
  const gan::eval::Kid kid = gan::eval::kid(real100, fake, 3, 100, 7, dev);
  CHECK(kid.mean == Approx(j["kid_real100_fake"]["mean"].get<double>()).epsilon(tol));
  CHECK(kid.std < 10 * tol);
  CHECK(gan::eval::mmd2_polynomial(real100, fake, dev) ==
        Approx(j["mmd2_unbiased_real100_fake"].get<double>()).epsilon(tol));

  for (const int k : {3, 5}) {
    const nlohmann::json& want = j["prdc"][k == 3 ? "k3" : "k5"];
    const gan::eval::Prdc p = gan::eval::prdc(real, fake, k, dev);
    INFO("k = " << k);
    CHECK(p.precision == Approx(want["precision"].get<double>()).epsilon(1e-12));
    CHECK(p.recall == Approx(want["recall"].get<double>()).epsilon(1e-12));
    CHECK(p.density == Approx(want["density"].get<double>()).epsilon(1e-12));
    CHECK(p.coverage == Approx(want["coverage"].get<double>()).epsilon(1e-12));
  }

  // Both k in one pass (what gan_eval does) give the same numbers.
  const std::vector<gan::eval::Prdc> both = gan::eval::prdc(real, fake, {5, 3}, dev);
  CHECK(both[0].k == 5);
  CHECK(both[0].coverage == Approx(j["prdc"]["k5"]["coverage"].get<double>()).epsilon(1e-12));
  CHECK(both[1].precision == Approx(j["prdc"]["k3"]["precision"].get<double>()).epsilon(1e-12));
  CHECK(both[1].density == Approx(j["prdc"]["k3"]["density"].get<double>()).epsilon(1e-12));

  const Matrix logits = matrix(j["logits"]);
  CHECK(gan::eval::inception_score(logits, 1).mean ==
        Approx(j["inception_score_splits1"].get<double>()).epsilon(1e-10));
  const gan::eval::Score is10 = gan::eval::inception_score(logits, 10);
  CHECK(is10.mean ==
        Approx(j["inception_score_splits10_noshuffle"]["mean"].get<double>()).epsilon(1e-10));
  CHECK(is10.std ==
        Approx(j["inception_score_splits10_noshuffle"]["std"].get<double>()).epsilon(1e-10));
}

}  // namespace

TEST_CASE("metrics: FD, KID, PRDC and IS equal pytorch-fid's, torch-fidelity's and prdc's",
          "[cpu][metrics]") {
  check_known_answers(Device::CPU, 1e-10);
}

TEST_CASE("metrics cuda: the same known answers with GEMMs on the GPU", "[cuda][metrics]") {
  GAN_REQUIRE_GPU();
  check_known_answers(Device::CUDA, 2e-5);  // float32 inner products
}

TEST_CASE("metrics: the same distribution scores near 0, a shifted one worse as it moves",
          "[cpu][metrics]") {
  const Matrix a = gaussian_rows(2000, 6, 0, 1, 1), b = gaussian_rows(2000, 6, 0, 1, 2);
  const gan::eval::Gaussian ga = gan::eval::fit_gaussian(a);
  CHECK(gan::eval::frechet_distance(ga, ga).distance == Approx(0).margin(1e-9));
  double last_fd = gan::eval::frechet_distance(ga, gan::eval::fit_gaussian(b)).distance;
  double last_kid = gan::eval::kid(a, b, 10, 200, 1, Device::CPU).mean;
  const gan::eval::Prdc same = gan::eval::prdc(a, b, 5, Device::CPU);
  CHECK(last_fd < 0.05);
  CHECK(std::abs(last_kid) < 0.05);
  CHECK(same.precision > 0.8);
  CHECK(same.recall > 0.8);
  double last_precision = same.precision, last_coverage = same.coverage;
  for (const double shift : {0.5, 1.0, 2.0}) {
    const Matrix c = gaussian_rows(2000, 6, shift, 1, 3);
    const double fd = gan::eval::frechet_distance(ga, gan::eval::fit_gaussian(c)).distance;
    const double kd = gan::eval::kid(a, c, 10, 200, 1, Device::CPU).mean;
    const gan::eval::Prdc p = gan::eval::prdc(a, c, 5, Device::CPU);
    INFO("shift " << shift);
    CHECK(fd > last_fd);
    CHECK(fd == Approx(6 * shift * shift).epsilon(0.1));  // |shift|^2 summed over 6 dims
    CHECK(kd > last_kid);
    CHECK(p.precision < last_precision);
    CHECK(p.coverage < last_coverage);
    last_fd = fd, last_kid = kd, last_precision = p.precision, last_coverage = p.coverage;
  }
}

TEST_CASE("metrics: inception score bounds and the class histogram", "[cpu][metrics]") {
  // Confident and uniform over 4 classes: IS = 4; one class only: IS = 1.
  Matrix spread, collapsed;
  spread.rows = collapsed.rows = 8, spread.cols = collapsed.cols = 4;
  for (int i = 0; i < 8; ++i)
    for (int c = 0; c < 4; ++c) {
      spread.values.push_back(c == i % 4 ? 60.f : 0.f);
      collapsed.values.push_back(c == 2 ? 60.f : 0.f);
    }
  CHECK(gan::eval::inception_score(spread, 1).mean == Approx(4).epsilon(1e-9));
  CHECK(gan::eval::inception_score(collapsed, 1).mean == Approx(1).epsilon(1e-9));
  CHECK(gan::eval::class_histogram(spread) == std::vector<int64_t>{2, 2, 2, 2});
  CHECK(gan::eval::class_histogram(collapsed) == std::vector<int64_t>{0, 0, 8, 0});
  CHECK_THROWS_WITH(gan::eval::inception_score(spread, 9), "metrics: 9 splits of 8 rows");
}

// Ties at a radius (points on a grid, distances exact in float): prdc counts strictly inside.
// prdc 0.2: compute_prdc([[0], [1], [2], [3], [4]], [[5], [2.5], [10]], nearest_k=1) =
// precision 1/3, recall 0.8, density 2/3, coverage 0.4 (5 is exactly one radius from 4).
TEST_CASE("metrics: prdc counts points strictly inside the radii", "[cpu][metrics]") {
  Matrix real, fake;
  real.rows = 5, fake.rows = 3, real.cols = fake.cols = 1;
  real.values = {0, 1, 2, 3, 4};
  fake.values = {5, 2.5, 10};
  const gan::eval::Prdc p = gan::eval::prdc(real, fake, 1, Device::CPU);
  CHECK(p.precision == Approx(1.0 / 3));
  CHECK(p.recall == Approx(0.8));
  CHECK(p.density == Approx(2.0 / 3));
  CHECK(p.coverage == Approx(0.4));
}
