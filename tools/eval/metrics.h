// Sample-quality metrics on feature matrices (rows = images), as the reference packages compute
// them (docs/metrics.md; known-answer tests in tests/test_metrics.cpp against
// tests/fixtures/metrics_known_answers.json):
//   - Frechet distance (pytorch-fid's calculate_frechet_distance): |mu_a - mu_b|^2 + tr(S_a) +
//     tr(S_b) - 2 tr sqrt(S_a S_b), covariances with N - 1. tr sqrt(S_a S_b) is computed as the sum
//     of sqrt(eigenvalues) of the symmetric S_a^1/2 S_b S_a^1/2 (same eigenvalues, no complex
//     parts to discard; Eigen's self-adjoint solver).
//   - KID (torch-fidelity): the mean and standard deviation (ddof 0) over `subsets` random subsets
//     of `size` rows of each set of MMD^2 = (sum_{i!=j} Kxx + sum_{i!=j} Kyy) / (s (s - 1))
//     - 2 sum_ij Kxy / s^2, with k(x, y) = (x.y / d + 1)^3. Subsets come from our own generator
//     (seeded), not numpy's: equal to torch-fidelity's value when size equals both set sizes.
//   - precision, recall, density, coverage (prdc, Naeem et al. 2020): Euclidean distances, radii
//     = distance to the k-th nearest neighbour within the same set (self excluded), strict <.
//   - Inception-Score-style score from classifier logits (torch-fidelity's isc without the
//     shuffle): exp(mean_i KL(p_i || mean p)) per split of consecutive rows; mean and std (ddof 0).
//   - the histogram of predicted classes.
// Inner products (distances, kernels) are GEMMs: cuBLAS through the engine on Device::CUDA
// (float32), Eigen in double on the CPU. The rest is double precision on the host.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "engine/tensor.h"
#include "tools/eval/features.h"

namespace gan::eval {

struct Gaussian {
  int64_t count = 0;
  int64_t dim = 0;
  std::vector<double> mean;  // (dim)
  std::vector<double> cov;   // (dim, dim), unbiased
};
Gaussian fit_gaussian(const Matrix& x);

struct Frechet {
  double distance = 0;
  double mean_term = 0;  // |mu_a - mu_b|^2
  double trace_a = 0, trace_b = 0;
  double trace_sqrt = 0;  // tr sqrt(S_a S_b)
};
Frechet frechet_distance(const Gaussian& a, const Gaussian& b);

// a (n, d) b^T (d, m) as host doubles (n, m), row-major; on `device` (see above).
std::vector<double> gram(const Matrix& a, const Matrix& b, Device device);
// Rows [begin, begin + count) of a matrix.
Matrix rows(const Matrix& m, int64_t begin, int64_t count);

struct Kid {
  double mean = 0, std = 0;
  int subsets = 0;
  int64_t subset_size = 0;
};
// The estimator above on two whole sets of equal size.
double mmd2_polynomial(const Matrix& x, const Matrix& y, Device device);
// subset_size is clamped to min(rows of real, rows of fake).
Kid kid(const Matrix& real, const Matrix& fake, int subsets, int64_t subset_size, uint64_t seed,
        Device device);

struct Prdc {
  int k = 0;
  double precision = 0, recall = 0, density = 0, coverage = 0;
};
Prdc prdc(const Matrix& real, const Matrix& fake, int k, Device device);
// Several k at once (one pass over the distances): one Prdc per k, in the order given. The real
// set's squared radii may be given (kth_radii2, e.g. cached with its features).
std::vector<Prdc> prdc(const Matrix& real, const Matrix& fake, const std::vector<int>& ks,
                       Device device,
                       const std::map<int, std::vector<double>>* real_radii2 = nullptr);
// Squared distance of each row to its k-th nearest neighbour within the set (itself excluded),
// for each k of ks: result[t][row].
std::vector<std::vector<double>> kth_radii2(const Matrix& m, const std::vector<int>& ks,
                                            Device device);

struct Score {
  double mean = 0, std = 0;
  int splits = 0;
};
Score inception_score(const Matrix& logits, int splits);

// counts[c] = rows whose largest logit is class c.
std::vector<int64_t> class_histogram(const Matrix& logits);

}  // namespace gan::eval
