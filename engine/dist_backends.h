// The communicator backends of engine/dist.h (dist_mpi.cpp, dist_nccl.cpp): internal.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/dist.h"

namespace gan::dist::detail {

bool mpi_built();
// MPI_Init on first use (MPI_Finalize at exit); checks that MPI's world matches the launcher's.
std::unique_ptr<Communicator> make_mpi(const Launch& launch);
// NCCL on the engine stream; host-side collectives and the unique id through MPI when it is
// built and the launcher is MPI's (mpirun, or srun with PMI), else through the file of init.
std::unique_ptr<Communicator> make_nccl(const Launch& launch, const std::string& init);

// One GPU per rank: the local rank's, or GPU 0 when the launcher left each rank one visible GPU;
// a local rank without a GPU of its own is a one-line error (no silent sharing).
void select_device(const Launch& launch);

// FNV-1a of n bytes, continuing from h (the cross-rank checks' hashes).
constexpr uint64_t kFnvOffset = 1469598103934665603ull;
uint64_t fnv1a(const void* data, size_t n, uint64_t h = kFnvOffset);

// Whether this process was started by a launcher MPI can initialise from.
bool mpi_launcher(const Launch& launch);

}  // namespace gan::dist::detail
