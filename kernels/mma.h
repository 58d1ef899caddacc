// Warp-level tensor-core building blocks for the next kernels (TF32 attention, fused epilogues):
// mma.sync m16n8k8 (TF32) and m16n8k16 (BF16) with f32 accumulators, ldmatrix (four 8x8 b16
// matrices) and cp.async (16-byte global -> shared copies in commit groups). Built with nvcc each
// is its inline PTX instruction (sm_80 and newer); built for the interpreter each follows the
// PTX ISA's fragment layouts over the warp (a warp-collective exchange of the lanes' fragments),
// so kernels written with them are tested on the CPU like any other (tests/test_mma.cpp).
//
// Fragment layouts, lane = 4 g + t (g = lane / 4, t = lane % 4); A row-major, B column-major:
//   m16n8k8 TF32:  a[0] = A[g][t], a[1] = A[g+8][t], a[2] = A[g][t+4], a[3] = A[g+8][t+4];
//                  b[0] = B[t][g], b[1] = B[t+4][g]
//   m16n8k16 BF16 (two per 32-bit register, the lower column/row in the low half):
//                  a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..], a[3] =
//                  A[g+8][2t+8..]; b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]
//   C, D (16 x 8, f32): c[0] = C[g][2t], c[1] = C[g][2t+1], c[2] = C[g+8][2t], c[3] = C[g+8][2t+1]
// Every lane of the warp must call each of these together (they are warp-synchronous).
#pragma once

#include <cstdint>
#include <cstring>

#include <cuda_runtime_api.h>

#include "kernels/bf16.h"

#if defined(GAN_INTERP)
#include "kernels/interpreter/simt.h"
#endif

namespace gan::kernels::mma {

// float -> TF32 (cvt.rna: round to nearest, ties away from zero), as its 32-bit pattern.
__device__ __forceinline__ uint32_t to_tf32(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
#else
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return (u & 0x7fffffu) ? (u | 0x400000u) & 0xffffe000u : u;
  return (u + 0x1000u) & 0xffffe000u;
#endif
}

// float -> bf16 (round to nearest even), as its 16-bit pattern (kernels/bf16.h).
__device__ __forceinline__ uint16_t to_bf16(float x) { return f32_to_bf16(x); }

// Two bf16 values in one register: lo in bits 0-15.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return uint32_t(to_bf16(lo)) | (uint32_t(to_bf16(hi)) << 16);
}

#if defined(GAN_INTERP)
namespace detail {
inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float bf16_to_float(uint32_t h) { return bits_to_float(h << 16); }
// Every lane's copy of T (the warp-collective exchange); __syncwarp() after reading. Each lane
// publishes the address of its copy in a per-OS-thread table (a runner runs one block at a time)
// and one warp barrier makes all 32 visible: two warp operations where 32 shuffles took 33.
template <class T>
void gather(const T& mine, const T* (&all)[32]) {
  thread_local const void* slots[32][32];
  const auto& ts = ::gan::interp::self();
  const unsigned lin =
      ts.thread_idx.x + ts.block_dim.x * (ts.thread_idx.y + ts.block_dim.y * ts.thread_idx.z);
  const void** warp = slots[(lin / 32) % 32];
  warp[ts.lane] = &mine;
  __syncwarp();
  for (int l = 0; l < 32; ++l) all[l] = static_cast<const T*>(warp[l]);
}
// One m16n8kK product over the warp: each lane's D fragment from every lane's A and B fragments.
// a_at(frags, row, k) and b_at(frags, k, col) read an element from the gathered fragments.
template <int K, class AAt, class BAt>
void mma_sync(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
              AAt a_at, BAt b_at) {
  struct Frag {
    uint32_t a[4], b[2];
  } mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  const Frag* all[32];
  gather(mine, all);
  const int lane = int(::gan::interp::self().lane), g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + (i % 2);
    float acc = c[i];
    for (int k = 0; k < K; ++k) acc = fmaf(a_at(all, row, k), b_at(all, k, col), acc);
    d[i] = acc;
  }
  __syncwarp();  // every lane has read the others' fragments
}
}  // namespace detail
#endif

// D = A B + C, A 16x8 TF32, B 8x8 TF32, C and D 16x8 f32.
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4],
                                                 const uint32_t (&b)[2], const float (&c)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
#elif defined(GAN_INTERP)
  // A[r][k] is register (r >= 8) + 2 (k >= 4) of lane 4 (r % 8) + k % 4; B[k][n] register
  // (k >= 4) of lane 4 n + k % 4.
  detail::mma_sync<8>(
      d, a, b, c,
      [](auto& all, int r, int k) {
        return detail::bits_to_float(all[4 * (r % 8) + k % 4]->a[(r >= 8) + 2 * (k >= 4)]);
      },
      [](auto& all, int k, int n) { return detail::bits_to_float(all[4 * n + k % 4]->b[k >= 4]); });
#endif
}

// D = A B + C, A 16x16 BF16, B 16x8 BF16, C and D 16x8 f32.
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4],
                                                  const uint32_t (&b)[2], const float (&c)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
#elif defined(GAN_INTERP)
  // Two values per register, the lower k in the low half: A[r][k] is in register (r >= 8) +
  // 2 (k >= 8) of lane 4 (r % 8) + (k % 8) / 2; B[k][n] in register (k >= 8) of lane
  // 4 n + (k % 8) / 2.
  auto half = [](uint32_t r, int k) {
    return detail::bf16_to_float(k % 2 ? r >> 16 : r & 0xffffu);
  };
  detail::mma_sync<16>(
      d, a, b, c,
      [&](auto& all, int r, int k) {
        return half(all[4 * (r % 8) + (k % 8) / 2]->a[(r >= 8) + 2 * (k >= 8)], k);
      },
      [&](auto& all, int k, int n) { return half(all[4 * n + (k % 8) / 2]->b[k >= 8], k); });
#endif
}

// ldmatrix.x4 (b16): lane l gives the address of row l % 8 of matrix l / 8 (16 bytes in shared
// memory); r[j] receives row l / 4, columns 2 (l % 4) and 2 (l % 4) + 1 of matrix j.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned addr = unsigned(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#elif defined(GAN_INTERP)
  struct Row {
    const void* p;
  } mine{smem_row};
  const Row* all[32];
  detail::gather(mine, all);
  const int lane = int(::gan::interp::self().lane);
  for (int j = 0; j < 4; ++j)
    std::memcpy(&r[j], static_cast<const char*>(all[8 * j + lane / 4]->p) + 4 * (lane % 4), 4);
  __syncwarp();
#endif
}

// cp.async: a 16-byte copy global -> shared; the first `src_bytes` come from src, the rest are
// zeros (src_bytes = 0 for a masked-off tile edge). Completes by cp_async_wait. The interpreter
// performs the copies only at the wait (the latest a GPU may), so a missing wait shows. The GPU
// reads only src_bytes, but compute-sanitizer's memcheck checks all 16: with src_bytes > 0 keep
// [src, src + 16) inside the buffer (pad buffers to whole chunks); the interpreter faults
// otherwise.
__device__ __forceinline__ void cp_async_16(void* smem, const void* src, int src_bytes = 16) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned addr = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(src),
               "r"(src_bytes));
#elif defined(GAN_INTERP)
  ::gan::interp::async_copy(smem, src, 16, src_bytes);
#endif
}
// Closes the group of copies issued since the last commit.
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#elif defined(GAN_INTERP)
  ::gan::interp::async_commit();
#endif
}
// Waits until at most N committed groups are pending (the copies of the rest have landed).
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#elif defined(GAN_INTERP)
  ::gan::interp::async_wait(N);
#endif
}

}  // namespace gan::kernels::mma
