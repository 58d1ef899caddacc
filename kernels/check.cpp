#include "kernels/check.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

namespace gan {

void throw_error(const std::string& msg) { throw Error(msg); }

void throw_cuda_error(int err, const char* call, const char* file, int line) {
  throw Error(std::string("CUDA error ") + cudaGetErrorName(cudaError_t(err)) + " (" +
              cudaGetErrorString(cudaError_t(err)) + ") in " + call + " at " + file + ":" +
              std::to_string(line));
}

void throw_cublas_error(int status, const char* call, const char* file, int line) {
  throw Error(std::string("cuBLAS error ") + cublasGetStatusName(cublasStatus_t(status)) + " (" +
              cublasGetStatusString(cublasStatus_t(status)) + ") in " + call + " at " + file + ":" +
              std::to_string(line));
}

}  // namespace gan
