// Shared by kernels and their host launchers: the host/device qualifier, the NVTX range every
// launcher opens (so an nsys timeline reads as op names), and grid-size helpers.
#pragma once

#include <cstdint>

#include <nvtx3/nvToolsExt.h>

#if defined(__CUDACC__)
#define GAN_HD __host__ __device__
#else
#define GAN_HD
#endif

namespace gan {

class NvtxRange {
 public:
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

// Blocks for a grid-stride loop over n items with `threads` per block (at least 1 block).
inline unsigned grid_blocks(int64_t n, int threads, int64_t max_blocks = int64_t(1) << 20) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > max_blocks) b = max_blocks;
  return unsigned(b);
}

}  // namespace gan

#define GAN_NVTX(name) ::gan::NvtxRange gan_nvtx_range_(name)
