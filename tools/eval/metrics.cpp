#include "tools/eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>

#include <fmt/format.h>
#include <Eigen/Dense>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace gan::eval {

namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;
using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

RowMatrix to_eigen(const Matrix& m) {
  RowMatrix out(m.rows, m.cols);
  for (int64_t i = 0; i < m.rows; ++i)
    for (int64_t j = 0; j < m.cols; ++j) out(i, j) = double(m.row(i)[j]);
  return out;
}

void check_features(const Matrix& m, const char* what) {
  GAN_CHECK(m.rows > 0 && m.cols > 0 && int64_t(m.values.size()) == m.rows * m.cols,
            fmt::format("metrics: {}: empty or malformed feature matrix ({} x {})", what, m.rows,
                        m.cols));
}

// sqrt of a symmetric positive semi-definite matrix (negative rounding eigenvalues -> 0).
MatrixXd sqrt_psd(const MatrixXd& a) {
  Eigen::SelfAdjointEigenSolver<MatrixXd> es(a);
  GAN_CHECK(es.info() == Eigen::Success, "metrics: eigen-decomposition failed");
  const VectorXd s = es.eigenvalues().cwiseMax(0.0).cwiseSqrt();
  return es.eigenvectors() * s.asDiagonal() * es.eigenvectors().transpose();
}

// Squared norms of the rows, in double.
std::vector<double> row_norms2(const Matrix& m) {
  std::vector<double> n(size_t(m.rows));
  for (int64_t i = 0; i < m.rows; ++i) {
    double s = 0;
    for (int64_t j = 0; j < m.cols; ++j) s += double(m.row(i)[j]) * double(m.row(i)[j]);
    n[size_t(i)] = s;
  }
  return n;
}

// Squared Euclidean distances between rows [begin, begin + count) of a and every row of b.
std::vector<double> distances2(const Matrix& a, const std::vector<double>& na, int64_t begin,
                               int64_t count, const Matrix& b, const std::vector<double>& nb,
                               Device device) {
  std::vector<double> d = gram(rows(a, begin, count), b, device);
  for (int64_t i = 0; i < count; ++i)
    for (int64_t j = 0; j < b.rows; ++j) {
      double& v = d[size_t(i * b.rows + j)];
      v = std::max(0.0, na[size_t(begin + i)] + nb[size_t(j)] - 2 * v);
    }
  return d;
}

constexpr int64_t kBlock = 1024;  // rows of a distance block (kBlock x N doubles at a time)

// Squared distance from each row to its k-th nearest neighbour in the same set (itself excluded:
// the (k+1)-th smallest with the self-distance set to 0, as prdc does), for every k of ks:
// radii[t][row] for ks[t]. One pass over the distances serves every k.
std::vector<std::vector<double>> radii_impl(const Matrix& m, const std::vector<int>& ks,
                                            Device device) {
  std::vector<int> sorted = ks;
  std::sort(sorted.begin(), sorted.end(), std::greater<int>());  // largest first
  for (int k : ks)
    GAN_CHECK(k >= 1 && k < m.rows,
              fmt::format("metrics: k = {} needs more than {} rows per set", k, m.rows));
  const std::vector<double> n2 = row_norms2(m);
  std::vector<std::vector<double>> r(ks.size(), std::vector<double>(size_t(m.rows)));
  for (int64_t b0 = 0; b0 < m.rows; b0 += kBlock) {
    const int64_t cnt = std::min(kBlock, m.rows - b0);
    std::vector<double> d = distances2(m, n2, b0, cnt, m, n2, device);
    for (int64_t i = 0; i < cnt; ++i) {
      double* row = d.data() + size_t(i * m.rows);
      row[b0 + i] = 0;
      int64_t end = m.rows;
      for (int k : sorted) {  // each k within the part the larger one left in front
        std::nth_element(row, row + k, row + end);
        end = k + 1;
        for (size_t t = 0; t < ks.size(); ++t)
          if (ks[t] == k) r[t][size_t(b0 + i)] = row[k];
      }
    }
  }
  return r;
}

}  // namespace

Matrix rows(const Matrix& m, int64_t begin, int64_t count) {
  GAN_CHECK(begin >= 0 && count >= 0 && begin + count <= m.rows, "metrics: rows out of range");
  Matrix out;
  out.rows = count, out.cols = m.cols;
  out.values.assign(m.values.begin() + begin * m.cols, m.values.begin() + (begin + count) * m.cols);
  return out;
}

std::vector<double> gram(const Matrix& a, const Matrix& b, Device device) {
  GAN_CHECK(a.cols == b.cols,
            fmt::format("metrics: feature sizes differ ({} vs {})", a.cols, b.cols));
  if (device == Device::CUDA) {
    NoGradGuard no_grad;
    const Tensor ta = Tensor::from_vector(a.values, Shape{a.rows, a.cols}, Device::CUDA);
    const Tensor tb = Tensor::from_vector(b.values, Shape{b.rows, b.cols}, Device::CUDA);
    const Var g = matmul(Var(ta), transpose(Var(tb)));
    const std::vector<float> v = g.value().to(Device::CPU).to_vector();
    return std::vector<double>(v.begin(), v.end());
  }
  const RowMatrix g = to_eigen(a) * to_eigen(b).transpose();
  return std::vector<double>(g.data(), g.data() + g.size());
}

Gaussian fit_gaussian(const Matrix& x) {
  check_features(x, "fit_gaussian");
  GAN_CHECK(x.rows >= 2, "metrics: a covariance needs at least 2 rows");
  const RowMatrix m = to_eigen(x);
  const VectorXd mu = m.colwise().mean();
  const RowMatrix c = m.rowwise() - mu.transpose();
  const MatrixXd cov = (c.transpose() * c) / double(x.rows - 1);
  Gaussian g;
  g.count = x.rows, g.dim = x.cols;
  g.mean.assign(mu.data(), mu.data() + mu.size());
  g.cov.resize(size_t(x.cols * x.cols));
  for (int64_t i = 0; i < x.cols; ++i)
    for (int64_t j = 0; j < x.cols; ++j) g.cov[size_t(i * x.cols + j)] = cov(i, j);
  return g;
}

Frechet frechet_distance(const Gaussian& a, const Gaussian& b) {
  GAN_CHECK(
      a.dim == b.dim && a.dim > 0,
      fmt::format("metrics: Frechet distance of {}- and {}-dimensional Gaussians", a.dim, b.dim));
  const int64_t d = a.dim;
  const Eigen::Map<const VectorXd> ma(a.mean.data(), d), mb(b.mean.data(), d);
  const Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> sa(
      a.cov.data(), d, d),
      sb(b.cov.data(), d, d);
  const MatrixXd ra = sqrt_psd(sa);
  const MatrixXd inner = ra * sb * ra;
  Eigen::SelfAdjointEigenSolver<MatrixXd> es(0.5 * (inner + inner.transpose()),
                                             Eigen::EigenvaluesOnly);
  GAN_CHECK(es.info() == Eigen::Success, "metrics: eigen-decomposition failed");
  Frechet f;
  f.mean_term = (ma - mb).squaredNorm();
  f.trace_a = sa.trace(), f.trace_b = sb.trace();
  f.trace_sqrt = es.eigenvalues().cwiseMax(0.0).cwiseSqrt().sum();
  f.distance = f.mean_term + f.trace_a + f.trace_b - 2 * f.trace_sqrt;
  return f;
}

double mmd2_polynomial(const Matrix& x, const Matrix& y, Device device) {
  check_features(x, "kid");
  check_features(y, "kid");
  GAN_CHECK(x.rows == y.rows && x.rows >= 2,
            fmt::format("metrics: KID subsets of {} and {} rows", x.rows, y.rows));
  const int64_t s = x.rows;
  const double inv_d = 1.0 / double(x.cols);
  auto k = [inv_d](double dot) { return std::pow(dot * inv_d + 1.0, 3); };
  auto off_diagonal_sum = [&](const std::vector<double>& g) {
    double t = 0;
    for (int64_t i = 0; i < s; ++i)
      for (int64_t j = 0; j < s; ++j)
        if (i != j) t += k(g[size_t(i * s + j)]);
    return t;
  };
  const double kxx = off_diagonal_sum(gram(x, x, device));
  const double kyy = off_diagonal_sum(gram(y, y, device));
  double kxy = 0;
  for (double v : gram(x, y, device)) kxy += k(v);
  return (kxx + kyy) / double(s * (s - 1)) - 2 * kxy / double(s * s);
}

Kid kid(const Matrix& real, const Matrix& fake, int subsets, int64_t subset_size, uint64_t seed,
        Device device) {
  check_features(real, "kid real");
  check_features(fake, "kid fake");
  GAN_CHECK(subsets >= 1, "metrics: KID needs at least one subset");
  const int64_t s = std::min({subset_size, real.rows, fake.rows});
  GAN_CHECK(s >= 2, "metrics: KID needs subsets of at least 2 rows");
  std::mt19937_64 rng(seed);
  auto pick = [&](const Matrix& m) {  // s distinct rows (partial Fisher-Yates)
    std::vector<int64_t> idx(size_t(m.rows));
    std::iota(idx.begin(), idx.end(), 0);
    Matrix out;
    out.rows = s, out.cols = m.cols;
    out.values.reserve(size_t(s * m.cols));
    for (int64_t i = 0; i < s; ++i) {
      std::uniform_int_distribution<int64_t> u(i, m.rows - 1);
      std::swap(idx[size_t(i)], idx[size_t(u(rng))]);
      const float* r = m.row(idx[size_t(i)]);
      out.values.insert(out.values.end(), r, r + m.cols);
    }
    return out;
  };
  std::vector<double> v(static_cast<size_t>(subsets));
  for (int t = 0; t < subsets; ++t) {
    const Matrix x = pick(real);
    const Matrix y = pick(fake);
    v[size_t(t)] = mmd2_polynomial(x, y, device);
  }
  Kid out;
  out.subsets = subsets, out.subset_size = s;
  out.mean = std::accumulate(v.begin(), v.end(), 0.0) / double(subsets);
  double var = 0;
  for (double e : v) var += (e - out.mean) * (e - out.mean);
  out.std = std::sqrt(var / double(subsets));
  return out;
}

std::vector<std::vector<double>> kth_radii2(const Matrix& m, const std::vector<int>& ks,
                                            Device device) {
  return radii_impl(m, ks, device);
}

std::vector<Prdc> prdc(const Matrix& real, const Matrix& fake, const std::vector<int>& ks,
                       Device device, const std::map<int, std::vector<double>>* real_radii2) {
  check_features(real, "prdc real");
  check_features(fake, "prdc fake");
  GAN_CHECK(!ks.empty(), "metrics: prdc needs a k");
  std::vector<std::vector<double>> rr;
  bool have = real_radii2 != nullptr;
  for (int k : ks)
    have = have && real_radii2->count(k) && int64_t(real_radii2->at(k).size()) == real.rows;
  if (have)
    for (int k : ks) rr.push_back(real_radii2->at(k));
  else
    rr = kth_radii2(real, ks, device);
  const auto rf = kth_radii2(fake, ks, device);
  const std::vector<double> nr = row_norms2(real), nf = row_norms2(fake);
  const size_t nk = ks.size();
  std::vector<std::vector<char>> fake_in(nk, std::vector<char>(size_t(fake.rows), 0));
  std::vector<std::vector<char>> real_in(nk, std::vector<char>(size_t(real.rows), 0));
  std::vector<std::vector<int64_t>> fake_count(nk, std::vector<int64_t>(size_t(fake.rows), 0));
  std::vector<int64_t> covered(nk, 0);
  for (int64_t b0 = 0; b0 < real.rows; b0 += kBlock) {
    const int64_t cnt = std::min(kBlock, real.rows - b0);
    const std::vector<double> d = distances2(real, nr, b0, cnt, fake, nf, device);
    for (size_t t = 0; t < nk; ++t)
      for (int64_t i = 0; i < cnt; ++i) {
        const double rad = rr[t][size_t(b0 + i)];
        double nearest = INFINITY;
        for (int64_t j = 0; j < fake.rows; ++j) {
          const double v = d[size_t(i * fake.rows + j)];
          if (v < rad) fake_in[t][size_t(j)] = 1, ++fake_count[t][size_t(j)];
          if (v < rf[t][size_t(j)]) real_in[t][size_t(b0 + i)] = 1;
          nearest = std::min(nearest, v);
        }
        covered[t] += nearest < rad;
      }
  }
  std::vector<Prdc> out(nk);
  for (size_t t = 0; t < nk; ++t) {
    Prdc& p = out[t];
    p.k = ks[t];
    p.precision = double(std::count(fake_in[t].begin(), fake_in[t].end(), 1)) / double(fake.rows);
    p.recall = double(std::count(real_in[t].begin(), real_in[t].end(), 1)) / double(real.rows);
    p.density = double(std::accumulate(fake_count[t].begin(), fake_count[t].end(), int64_t(0))) /
                (double(ks[t]) * double(fake.rows));
    p.coverage = double(covered[t]) / double(real.rows);
  }
  return out;
}

Prdc prdc(const Matrix& real, const Matrix& fake, int k, Device device) {
  return prdc(real, fake, std::vector<int>{k}, device).front();
}

Score inception_score(const Matrix& logits, int splits) {
  check_features(logits, "inception score");
  GAN_CHECK(splits >= 1 && splits <= logits.rows,
            fmt::format("metrics: {} splits of {} rows", splits, logits.rows));
  const int64_t n = logits.rows, c = logits.cols;
  // log p (n, c) in double.
  std::vector<double> logp(size_t(n * c));
  for (int64_t i = 0; i < n; ++i) {
    const float* r = logits.row(i);
    double m = -INFINITY;
    for (int64_t j = 0; j < c; ++j) m = std::max(m, double(r[j]));
    double s = 0;
    for (int64_t j = 0; j < c; ++j) s += std::exp(double(r[j]) - m);
    const double lse = m + std::log(s);
    for (int64_t j = 0; j < c; ++j) logp[size_t(i * c + j)] = double(r[j]) - lse;
  }
  std::vector<double> scores(static_cast<size_t>(splits));
  for (int t = 0; t < splits; ++t) {
    const int64_t b = t * n / splits, e = (t + 1) * n / splits;
    std::vector<double> q(size_t(c), 0.0);
    for (int64_t i = b; i < e; ++i)
      for (int64_t j = 0; j < c; ++j) q[size_t(j)] += std::exp(logp[size_t(i * c + j)]);
    for (double& v : q) v /= double(e - b);
    double kl = 0;
    for (int64_t i = b; i < e; ++i)
      for (int64_t j = 0; j < c; ++j) {
        const double lp = logp[size_t(i * c + j)];
        kl += std::exp(lp) * (lp - std::log(q[size_t(j)]));
      }
    scores[size_t(t)] = std::exp(kl / double(e - b));
  }
  Score s;
  s.splits = splits;
  s.mean = std::accumulate(scores.begin(), scores.end(), 0.0) / splits;
  double var = 0;
  for (double v : scores) var += (v - s.mean) * (v - s.mean);
  s.std = std::sqrt(var / splits);
  return s;
}

std::vector<int64_t> class_histogram(const Matrix& logits) {
  std::vector<int64_t> h(size_t(logits.cols), 0);
  for (int p : predictions(logits)) ++h[size_t(p)];
  return h;
}

}  // namespace gan::eval
