#include "kernels/concat.h"
#include "kernels/runtime.h"

namespace gan::kernels {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxParts = 8;  // inputs per launch; more are handled in groups

// Up to kMaxParts inputs occupying columns [col0, col0 + group_width) of the (rows, total) output.
struct Group {
  float* part[kMaxParts];
  int64_t width[kMaxParts];
  int64_t start[kMaxParts];  // column of part j within the group
  int count;
  int64_t group_width;
  int64_t col0;
  int64_t total;
};

// kToOutput: concat (part -> y); else split (y -> part, skipping null parts).
template <bool kToOutput>
__global__ void concat_kernel(Group g, float* y, int64_t rows) {
  const int64_t n = rows * g.group_width;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / g.group_width, c = i - r * g.group_width;
    int j = 0;
    while (j + 1 < g.count && c >= g.start[j + 1]) ++j;
    float* p = g.part[j];
    const int64_t pi = r * g.width[j] + (c - g.start[j]);
    const int64_t yi = r * g.total + g.col0 + c;
    if constexpr (kToOutput) {
      y[yi] = p[pi];
    } else {
      if (p) p[pi] = y[yi];
    }
  }
}

template <bool kToOutput>
void run(int count, float* const* parts, const int64_t* widths, int64_t rows, float* y,
         cudaStream_t stream) {
  GAN_CHECK(count >= 0 && rows >= 0, "concat_cuda: negative size");
  int64_t total = 0;
  for (int j = 0; j < count; ++j) total += widths[j];
  int64_t col0 = 0;
  for (int first = 0; first < count; first += kMaxParts) {
    Group g{};
    g.count = count - first < kMaxParts ? count - first : kMaxParts;
    g.col0 = col0;
    g.total = total;
    g.group_width = 0;
    for (int j = 0; j < g.count; ++j) {
      g.part[j] = parts[first + j];
      g.width[j] = widths[first + j];
      g.start[j] = g.group_width;
      g.group_width += g.width[j];
    }
    const int64_t n = rows * g.group_width;
    if (n > 0) {
      launch(concat_kernel<kToOutput>, grid_blocks(n, kThreads), kThreads, 0, stream, g, y, rows);
      GAN_CUDA_CHECK_LAUNCH();
    }
    col0 += g.group_width;
  }
}

}  // namespace

void concat_cuda(int count, const float* const* xs, const int64_t* widths, int64_t rows, float* y,
                 cudaStream_t stream) {
  GAN_NVTX("concat");
  run<true>(count, const_cast<float* const*>(xs), widths, rows, y, stream);
}

void split_cuda(int count, const float* dy, const int64_t* widths, int64_t rows, float* const* dxs,
                cudaStream_t stream) {
  GAN_NVTX("split");
  run<false>(count, dxs, widths, rows, const_cast<float*>(dy), stream);
}

}  // namespace gan::kernels
