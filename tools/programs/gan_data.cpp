// gan_data: prepares datasets once for training (tools/io/prepared.h, docs/io.md).
//   gan_data prepare SRC OUT --size S [--fit crop|pad|resize] [--channels C] [--threads N]
//   gan_data info FILE
//   gan_data verify FILE
//   gan_data bench SRC [--batch B] [--batches N] [--size S] [--workers W]
//     the training Loader's batch rate from a prepared file, or from a folder streamed as
//     gan_train streams it (decoded by W workers, fitted to S)
// SRC: a folder of PNG/JPEG images (recursive; one subfolder per class gives labels, sorted names
// as torchvision's ImageFolder), a zip archive of such a folder, an IDX file, a Fashion-MNIST/MNIST
// or CIFAR-10 directory, or a prepared file. OUT is written aside (OUT.partial) and renamed when
// complete; run the same command again after an interruption and it resumes.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "tools/io/prepared.h"
#include "tools/programs/cli.h"

namespace {

using namespace gan;

// "\rprepare: 1200 / 5000 images (2310 images/s)" on a terminal, a line every 10 s otherwise.
struct Progress {
  const char* what;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_line{};
  bool tty = ::isatty(2) != 0;
  int64_t first = -1;  // images done at the first call (resumed ones are not counted in the rate)

  void operator()(int64_t done, int64_t total, int64_t resumed) {
    const auto now = std::chrono::steady_clock::now();
    if (first < 0) first = resumed;
    const double s = std::chrono::duration<double>(now - start).count();
    const double rate = s > 0 ? double(done - first) / s : 0.0;
    const bool end = done == total;
    if (!tty && !end && now - last_line < std::chrono::seconds(10)) return;
    last_line = now;
    std::fprintf(stderr, "%s%s: %lld / %lld images (%.0f images/s)%s", tty ? "\r" : "", what,
                 (long long)done, (long long)total, rate, tty && !end ? "" : "\n");
    std::fflush(stderr);
  }
};

int cmd_prepare(const std::string& src, const std::string& out, data::PrepareOptions o) {
  Progress p{"prepare"};
  o.progress = [&p](int64_t d, int64_t t, int64_t r) { p(d, t, r); };
  const auto t0 = std::chrono::steady_clock::now();
  const data::PrepareResult r = data::prepare(src, out, o);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("gan_data: %s: %lld images %dx%dx%d from %s (%s)%s%s in %.1f s (%.0f images/s)\n",
              out.c_str(), (long long)r.count, o.size, o.size,
              data::read_prepared_header(out).channels, src.c_str(), r.source_format.c_str(),
              r.classes ? fmt::format(", {} classes", r.classes).c_str() : "",
              r.resumed ? fmt::format(", {} kept from the interrupted run", r.resumed).c_str() : "",
              s, s > 0 ? double(r.count - r.resumed) / s : 0.0);
  return 0;
}

int info(const std::string& path) {
  const data::PreparedHeader h = data::read_prepared_header(path);
  std::printf(
      "%s: prepared dataset, %lld images %dx%dx%d (fit %s%s), %s\n", path.c_str(),
      (long long)h.count, h.height, h.width, h.channels, h.fit.c_str(),
      h.fast_decode ? ", fast decode" : "",
      h.labels ? fmt::format("labels in {} classes", h.classes.size()).c_str() : "no labels");
  std::printf("  source %s (%s, digest %s)\n", h.source.c_str(), h.source_format.c_str(),
              h.source_digest.c_str());
  std::printf("  %llu bytes: pixels at %llu, %lld chunks of %lld images\n",
              (unsigned long long)h.file_bytes, (unsigned long long)h.pixel_offset,
              (long long)h.chunks, (long long)h.chunk_images);
  if (!h.classes.empty()) {
    std::string names;
    for (size_t i = 0; i < h.classes.size() && i < 20; ++i)
      names += (i ? ", " : "") + fmt::format("{} {}", i, h.classes[i]);
    if (h.classes.size() > 20) names += fmt::format(", ... ({} more)", h.classes.size() - 20);
    std::printf("  classes: %s\n", names.c_str());
  }
  return 0;
}

int verify(const std::string& path) {
  Progress p{"verify"};
  data::verify_prepared(path, [&p](int64_t d, int64_t t, int64_t r) { p(d, t, r); });
  (void)data::map_prepared(path);  // labels within the classes, every chunk complete
  std::printf("gan_data: %s: ok (every chunk's and the labels' CRC-32 match)\n", path.c_str());
  return 0;
}

// The training Loader (CPU batches, flips on) over a prepared file (mapped) or a folder (streamed,
// as gan_train reads one): the time to the first batch (from opening SRC), batches per second
// after 5 of warm-up, and the process's peak resident memory.
int bench(const std::string& path, int batch, int batches, int size, int workers) {
  const auto t_open = std::chrono::steady_clock::now();
  data::FolderOptions fo;
  fo.size = size > 0 ? size : 64;
  fo.lazy = true;
  const data::Dataset d = data::load_auto(path, true, fo);
  data::LoaderOptions o;
  o.image_size = size > 0 ? size : d.height;  // a prepared file of another size is resized
  o.fit = img::Fit::Resize;
  o.channels = d.channels;
  o.batch_size = batch;
  o.hflip = true;
  o.device = Device::CPU;
  o.workers = workers;
  data::Loader loader(d, o);
  (void)loader.next();
  const double first =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_open).count();
  for (int i = 0; i < 4; ++i) (void)loader.next();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < batches; ++i) (void)loader.next();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  // Resident now, split: anonymous memory (the process's own) and file pages (the mapped
  // dataset's, which the kernel can drop and read again).
  long anon_kb = -1, file_kb = -1;
  if (FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    while (std::fgets(line, sizeof line, f)) {
      std::sscanf(line, "RssAnon: %ld kB", &anon_kb);
      std::sscanf(line, "RssFile: %ld kB", &file_kb);
    }
    std::fclose(f);
  }
  std::printf(
      "gan_data: %s (%s, %lld images): first batch after %.3f s; %d batches of %d images "
      "%dx%dx%d in %.3f s: %.1f batches/s, %.0f images/s (%d workers); peak resident %.0f MB, at "
      "the end %.0f MB anonymous + %.0f MB file pages\n",
      path.c_str(), d.format.c_str(), (long long)d.count, first, batches, batch, o.image_size,
      o.image_size, d.channels, s, batches / s, double(batches) * batch / s, workers,
      double(ru.ru_maxrss) / 1024.0, anon_kb / 1024.0, file_kb / 1024.0);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gan_data: prepares image datasets for gan_train and gan_eval"};
  app.require_subcommand(1);
  app.fallthrough();
  std::string src, out, fit = "crop", split = "train";
  data::PrepareOptions o;
  CLI::App* prep = app.add_subcommand(
      "prepare", "decode and fit SRC once into the prepared file OUT (resumes an interrupted run)");
  prep->add_option("src", src,
                   "a folder of PNG/JPEG images (one subfolder per class gives labels), a zip "
                   "archive of them, an IDX file, a Fashion-MNIST/MNIST or CIFAR-10 directory, or "
                   "a prepared file")
      ->required();
  prep->add_option("out", out, "the prepared file to write")->required();
  prep->add_option("--size", o.size, "images are fitted to size x size")
      ->required()
      ->check(CLI::Range(1, 8192));
  prep->add_option("--fit", fit, "crop (centre square), pad or resize")
      ->capture_default_str()
      ->check(CLI::IsMember({"crop", "pad", "resize"}));
  prep->add_option("--channels", o.channels, "1 or 3 (default: the source's; 3 for folders)")
      ->check(CLI::IsMember({1, 3}));
  prep->add_option("--background", o.background, "padding value for --fit pad")
      ->capture_default_str();
  prep->add_option("--split", split, "train or test, for IDX and CIFAR-10 directories")
      ->capture_default_str()
      ->check(CLI::IsMember({"train", "test"}));
  prep->add_flag("--overwrite", o.overwrite, "replace OUT if it exists");
  prep->add_flag("--fast-decode", o.fast_decode,
                 "decode JPEGs at 1/2, 1/4 or 1/8 scale when that stays >= --size (libjpeg's DCT "
                 "scaling, as PIL's draft): faster, a few levels from the exact decode");
  std::string path;
  CLI::App* inf = app.add_subcommand("info", "describe a prepared file (reads its header)");
  inf->add_option("file", path, "a prepared file")->required();
  CLI::App* ver = app.add_subcommand("verify", "check every chunk's CRC-32 and the labels");
  ver->add_option("file", path, "a prepared file")->required();
  int batch = 64, batches = 200, bench_size = 0, workers = 2;
  CLI::App* ben = app.add_subcommand(
      "bench", "time the training Loader's batches from a prepared file or a streamed folder");
  ben->add_option("src", path, "a prepared file, or a folder (streamed)")->required();
  ben->add_option("--size", bench_size,
                  "the batches' image size (default: a prepared file's own, 64 for a folder)")
      ->check(CLI::Range(1, 8192));
  ben->add_option("--workers", workers, "loader threads that decode and fit")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  ben->add_option("--batch", batch, "batch size")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  ben->add_option("--batches", batches, "batches timed (after 5 of warm-up)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  if (auto rc = cli::parse(app, argc, argv, "gan_data")) return *rc;
  try {
    if (*prep) {
      o.fit = img::parse_fit(fit);
      o.train = split == "train";
      o.threads = kernels::cpu::num_threads();
      return cmd_prepare(src, out, o);
    }
    if (*inf) return info(path);
    if (*ben) return bench(path, batch, batches, bench_size, workers);
    return verify(path);
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    std::fprintf(stderr, "%s%s\n", msg.rfind("gan_data:", 0) == 0 ? "" : "gan_data: ", msg.c_str());
    return 1;
  }
}
