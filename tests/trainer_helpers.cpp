#include "tests/trainer_helpers.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zlib.h>
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>

#include <catch2/catch.hpp>

#include "tools/io/data.h"
#include "tools/io/safetensors.h"

namespace fs = std::filesystem;

namespace gan::test {

namespace {

// Removes every scratch directory of this process when it exits.
struct ScratchDirs {
  std::mutex mu;
  std::vector<fs::path> dirs;
  ~ScratchDirs() {
    for (const fs::path& d : dirs) {
      std::error_code ec;
      fs::remove_all(d, ec);
    }
  }
};
ScratchDirs& scratch_dirs() {
  static ScratchDirs s;
  return s;
}

}  // namespace

fs::path scratch(const std::string& name) {
  // Per process: ctest runs the same case in several processes at once (the interpreter under
  // two schedule seeds), which must not share a directory.
  const fs::path p =
      fs::temp_directory_path() / ("gan_trainer_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  ScratchDirs& s = scratch_dirs();
  const std::lock_guard<std::mutex> lock(s.mu);
  if (std::find(s.dirs.begin(), s.dirs.end(), p) == s.dirs.end()) s.dirs.push_back(p);
  return p;
}

void put_be32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s.push_back(char((v >> (8 * i)) & 0xff));
}

namespace {

// Writes bytes gzip-compressed to file through a per-process temporary name (test processes
// running in parallel may make it at once).
void write_gz_atomic(const fs::path& file, const std::string& bytes) {
  const std::string tmp = file.string() + ".tmp" + std::to_string(::getpid());
  gzFile gz = gzopen(tmp.c_str(), "wb");
  REQUIRE(gz != nullptr);
  REQUIRE(gzwrite(gz, bytes.data(), unsigned(bytes.size())) == int(bytes.size()));
  gzclose(gz);
  fs::rename(tmp, file);
}

data::Dataset fashion_mnist() {
  // GAN_FASHION_MNIST_DIR: where the dataset is on a machine without the Debian package (the GPU
  // machine; tools/scripts/gpu_session.sh sets it).
  const char* where = std::getenv("GAN_FASHION_MNIST_DIR");
  return data::load_fashion_mnist(where ? where : data::kFashionMnistDir);
}

std::string idx_images(const data::Dataset& ds, int64_t n) {
  std::string bytes;
  put_be32(bytes, 0x803);
  put_be32(bytes, uint32_t(n));
  put_be32(bytes, 28);
  put_be32(bytes, 28);
  bytes.append(reinterpret_cast<const char*>(ds.pixels.data()), size_t(n) * 28 * 28);
  return bytes;
}

}  // namespace

fs::path fashion_subset(int64_t n) {
  const fs::path dir = fs::temp_directory_path() / "gan_trainer_test_data";
  const fs::path file = dir / ("fmnist_" + std::to_string(n) + "-images-idx3-ubyte.gz");
  if (fs::exists(file)) return file;
  fs::create_directories(dir);
  write_gz_atomic(file, idx_images(fashion_mnist(), n));
  return file;
}

fs::path fashion_subset_labelled(int64_t n) {
  const fs::path dir = fs::temp_directory_path() / "gan_trainer_test_data" /
                       ("fmnist_labelled_" + std::to_string(n));
  const fs::path images = dir / "train-images-idx3-ubyte.gz";
  const fs::path labels = dir / "train-labels-idx1-ubyte.gz";
  if (fs::exists(images) && fs::exists(labels)) return dir;
  fs::create_directories(dir);
  const data::Dataset ds = fashion_mnist();
  std::string lb;
  put_be32(lb, 0x801);
  put_be32(lb, uint32_t(n));
  for (int64_t i = 0; i < n; ++i) lb.push_back(char(ds.labels[size_t(i)]));
  write_gz_atomic(labels, lb);  // labels first: the images' presence means both are there
  write_gz_atomic(images, idx_images(ds, n));
  return dir;
}

std::vector<std::string> split_args(const std::string& args) {
  std::vector<std::string> out;
  std::istringstream in(args);
  for (std::string a; in >> a;) out.push_back(a);
  return out;
}

pid_t spawn(const std::string& program, const std::vector<std::string>& args, const fs::path& log,
            uint64_t fsize_limit) {
  // Everything the child needs is made before fork: after it, only async-signal-safe calls.
  std::vector<std::string> all{program};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log_path = log.string();
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) ::_exit(120);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::close(fd);
    if (fsize_limit > 0) {
      // The limit is set for the child only; the log is already open (and small).
      rlimit lim{rlim_t(fsize_limit), rlim_t(fsize_limit)};
      if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(121);
    }
    ::execv(argv[0], argv.data());
    ::_exit(122);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string last_line(const std::string& s) {
  std::string t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const size_t k = t.rfind('\n');
  return k == std::string::npos ? t : t.substr(k + 1);
}

void require_same_checkpoint(const fs::path& a, const fs::path& b) {
  const st::File fa = st::read_file((a / "checkpoint.safetensors").string());
  const st::File fb = st::read_file((b / "checkpoint.safetensors").string());
  REQUIRE(fa.entries.size() == fb.entries.size());
  for (size_t i = 0; i < fa.entries.size(); ++i) {
    INFO(fa.entries[i].name);
    REQUIRE(fa.entries[i].name == fb.entries[i].name);
    CHECK(fa.entries[i].bytes == fb.entries[i].bytes);
  }
}

std::vector<fs::path> temp_files(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) out.push_back(e.path());
  return out;
}

}  // namespace gan::test
