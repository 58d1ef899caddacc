// Atomic file writes: the bytes go to a temporary file beside `path` (`<path>.tmp.<pid>-<n>`),
// which is fsynced and rename(2)d over `path` (then the directory is fsynced), so a reader or a
// crash never sees a half-written file and an existing file is only replaced by a complete one.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace gan::io {

// Throws gan::Error "<who>: <path>: cannot write (<step>: <reason>); the previous file, if any,
// is unchanged"; the temporary file is removed on failure.
void write_file_atomic(const std::string& path, const void* data, size_t size,
                       std::string_view who);

// Unlinks the temporary file of the write_file_atomic call in progress, if any. Async-signal-safe:
// for a signal handler that ends the process at once (its target file stays as it was).
void remove_pending_temp() noexcept;

// Removes the temporary files write_file_atomic leaves in `dir` (`<name>.tmp.<pid>-<n>`) when a
// process dies while writing (kill -9, power loss); returns how many it removed. Only for
// directories no other live process writes into (a run's --out).
int remove_stale_temps(const std::string& dir);

}  // namespace gan::io
