// Errors and checks for every layer. A failure is a gan::Error whose message names the op and the
// shapes involved, or the CUDA/cuBLAS call with its file and line. Kernels include this (and
// nothing from engine/); engine/error.h re-exports it. No fmt dependency, so .cu files can use it.
#pragma once

#include <stdexcept>
#include <string>

namespace gan {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void throw_error(const std::string& msg);
[[noreturn]] void throw_cuda_error(int err, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(int status, const char* call, const char* file, int line);

}  // namespace gan

// GAN_CHECK(cond, message-expression): throws gan::Error(message) when cond is false. The message
// is only built on failure.
#define GAN_CHECK(cond, msg)                           \
  do {                                                 \
    if (!(cond)) ::gan::throw_error(std::string(msg)); \
  } while (0)

#define GAN_CUDA_CHECK(call)                                                              \
  do {                                                                                    \
    const auto gan_err_ = (call);                                                         \
    if (gan_err_ != 0) ::gan::throw_cuda_error(int(gan_err_), #call, __FILE__, __LINE__); \
  } while (0)

#define GAN_CUBLAS_CHECK(call)                                                            \
  do {                                                                                    \
    const auto gan_st_ = (call);                                                          \
    if (gan_st_ != 0) ::gan::throw_cublas_error(int(gan_st_), #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: reports launch-configuration errors at the launcher's line.
#define GAN_CUDA_CHECK_LAUNCH() GAN_CUDA_CHECK(cudaGetLastError())
