#include "tools/fileio.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "engine/error.h"

namespace gan::io {

void write_file_atomic(const std::string& path, const void* data, size_t size,
                       std::string_view who) {
  std::string tmpl = path + ".tmp.XXXXXX";
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0)
    throw Error(fmt::format("{}: {}: cannot write ({})", who, path, std::strerror(errno)));
  auto fail = [&](const char* step, int err, bool close_fd) {
    if (close_fd) ::close(fd);
    ::unlink(tmpl.c_str());
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
  if (::fchmod(fd, 0644) != 0) fail("fchmod", errno, true);
  if (::fsync(fd) != 0) fail("fsync", errno, true);
  if (::close(fd) != 0) fail("close", errno, false);
  if (std::rename(tmpl.c_str(), path.c_str()) != 0) fail("rename", errno, false);
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {  // make the rename itself durable
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace gan::io
