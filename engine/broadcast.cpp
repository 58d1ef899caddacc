#include "engine/broadcast.h"

namespace gan {

using kernels::BroadcastIndex;

namespace {
// Strides of `s` (aligned right against out) in out's index space, 0 where s broadcasts.
void strides_in(const Shape& out, const Shape& s, int64_t* st) {
  int64_t stride = 1;
  for (int d = out.ndim - 1; d >= 0; --d) {
    const int k = s.ndim - out.ndim + d;
    const int64_t sd = k >= 0 ? s.dims[k] : 1;
    st[d] = (sd == 1 && out.dims[d] != 1) ? 0 : stride;
    stride *= sd;
  }
}
}  // namespace

BroadcastIndex make_broadcast_index(const Shape& out, const Shape& a, const Shape& b) {
  BroadcastIndex bi;
  bi.ndim = out.ndim;
  bi.n = out.numel();
  for (int d = 0; d < out.ndim; ++d) bi.out[d] = out.dims[d];
  strides_in(out, a, bi.sa);
  strides_in(out, b, bi.sb);
  const bool a_full = a.numel() == bi.n;
  const int64_t nb = b.numel();
  bi.nb = nb;
  if (!a_full) {
    bi.mode = BroadcastIndex::kGeneric;
  } else if (nb == bi.n) {
    bi.mode = BroadcastIndex::kSame;
  } else if (nb == 1) {
    bi.mode = BroadcastIndex::kScalarB;
  } else {
    // b's non-broadcast dims form one trailing run -> kRowB; one leading run -> kOuterB.
    int first = -1, last = -1;
    for (int d = 0; d < out.ndim; ++d)
      if (bi.sb[d] != 0 && out.dims[d] != 1) {
        if (first < 0) first = d;
        last = d;
      }
    bool contiguous = true;
    for (int d = first; d <= last; ++d)
      if (bi.sb[d] == 0 && out.dims[d] != 1) contiguous = false;
    if (contiguous && last == out.ndim - 1) {
      bi.mode = BroadcastIndex::kRowB;
      bi.inner = nb;
    } else if (contiguous && first >= 0) {
      bi.mode = BroadcastIndex::kOuterB;
      bi.inner = out.prod(last + 1, out.ndim);
    } else {
      bi.mode = BroadcastIndex::kGeneric;
    }
  }
  return bi;
}

}  // namespace gan
