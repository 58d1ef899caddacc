#include "tools/io/fileio.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "engine/error.h"

namespace gan::io {

namespace {

// The temporary file being written (one writer thread at a time: the trainer's), for
// remove_pending_temp in a signal handler.
char g_pending[4096];
volatile std::sig_atomic_t g_has_pending = 0;

}  // namespace

void remove_pending_temp() noexcept {
  if (g_has_pending) ::unlink(g_pending);
}

int remove_stale_temps(const std::string& dir) {
  namespace fs = std::filesystem;
  int removed = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const size_t at = name.rfind(".tmp.");
    if (at == std::string::npos || at == 0 || at + 5 == name.size()) continue;
    const std::string tail = name.substr(at + 5);  // <pid>-<n>
    if (tail.find_first_not_of("0123456789-") == std::string::npos && e.is_regular_file(ec) &&
        fs::remove(e.path(), ec))
      ++removed;
  }
  return removed;
}

void write_file_atomic(const std::string& path, const void* data, size_t size,
                       std::string_view who) {
  // The temporary name is known before the file exists (<path>.tmp.<pid>-<n>), so that a signal
  // handler that ends the process can remove it whenever it runs (remove_pending_temp).
  static std::atomic<unsigned> counter{0};
  const std::string tmpl = fmt::format("{}.tmp.{}-{}", path, ::getpid(), counter++);
  if (tmpl.size() < sizeof g_pending) {
    std::memcpy(g_pending, tmpl.c_str(), tmpl.size() + 1);
    g_has_pending = 1;
  }
  int fd = ::open(tmpl.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0 && errno == EEXIST) {  // left by an earlier process that had this pid
    ::unlink(tmpl.c_str());
    fd = ::open(tmpl.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  }
  if (fd < 0) {
    const int err = errno;
    g_has_pending = 0;
    throw Error(fmt::format("{}: {}: cannot write ({})", who, path, std::strerror(err)));
  }
  auto fail = [&](const char* step, int err, bool close_fd) {
    if (close_fd) ::close(fd);
    ::unlink(tmpl.c_str());
    g_has_pending = 0;
    throw Error(
        fmt::format("{}: {}: cannot write ({}: {}); the previous file, if any, is unchanged", who,
                    path, step, std::strerror(err)));
  };
  const auto* p = static_cast<const unsigned char*>(data);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, p + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("write", errno, true);
    done += size_t(n);
  }
  if (::fsync(fd) != 0) fail("fsync", errno, true);
  if (::close(fd) != 0) fail("close", errno, false);
  if (std::rename(tmpl.c_str(), path.c_str()) != 0) fail("rename", errno, false);
  g_has_pending = 0;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {  // make the rename itself durable
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace gan::io
