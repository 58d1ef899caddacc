// Broadcast index maps (kernels/broadcast.h) built from engine shapes.
#pragma once

#include "engine/shape.h"
#include "kernels/broadcast.h"

namespace gan {

static_assert(Shape::kMaxDims == kernels::kBroadcastMaxDims, "broadcast: dimension limits differ");

// out must be broadcast_shapes(a, b). a == out is required for every mode but kGeneric.
kernels::BroadcastIndex make_broadcast_index(const Shape& out, const Shape& a, const Shape& b);

}  // namespace gan
