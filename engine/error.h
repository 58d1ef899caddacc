// Errors and checks: gan::Error, GAN_CHECK and the CUDA/cuBLAS call checks live with the kernels
// (kernels/check.h, the lowest layer); the engine uses them through this header.
#pragma once

#include "kernels/check.h"
