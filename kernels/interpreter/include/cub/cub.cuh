// The interpreter's CUB (kernels/interpreter/): the subset the kernels use (docs/interpreter.md).
#pragma once

#include "cub/block/block_reduce.cuh"
#include "cub/warp/warp_reduce.cuh"
