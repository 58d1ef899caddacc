// fid_bench: InceptionV3 feature extraction (what gan_eval --fid spends its time on), images per
// second, against bench/torch_fid_bench.py (PyTorch's TorchScript run of the same TF-Inception
// archive) in docs/cpu-backend.md.
//
//   build/bench/fid_bench [--weights FILE] [--size 28] [--batch 50] [--batches 4] [--reps 3]
//                         [--device cpu|cuda] [--threads N]
//
// Synthetic 8-bit images (the same integer pattern as torch_fid_bench.py) of --size pixels, grey
// broadcast to RGB as gan_eval feeds Fashion-MNIST, go through gan_eval --fid's network: the TF
// graph's bilinear resize to 299, v / 128 - 1, the 2048 pool3 features. One warm-up batch, then
// --reps repeats of --batches batches; prints one JSON line with the median images per second.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "engine/autograd.h"
#include "engine/device.h"
#include "kernels/cpu/backend.h"
#include "models/inception.h"
#include "tools/eval/feature_nets.h"
#include "tools/programs/cli.h"

int main(int argc, char** argv) {
  using namespace gan;
  CLI::App app{"fid_bench: InceptionV3 (gan_eval --fid's network) images per second"};
  std::string weights = eval::default_cache_dir() + "/fid_inception_tf.safetensors", device = "cpu";
  int size = 28, batch = 50, batches = 4, reps = 3;
  app.add_option("--weights", weights, "converted TF-Inception (fetch_fid_weights.py)")
      ->capture_default_str();
  app.add_option("--size", size, "image size before the resize to 299")->capture_default_str();
  app.add_option("--batch", batch)->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--batches", batches, "batches per repeat")->capture_default_str();
  app.add_option("--reps", reps, "timed repeats (median)")->capture_default_str();
  app.add_option("--device", device)->capture_default_str()->check(CLI::IsMember({"cpu", "cuda"}));
  if (auto rc = cli::parse(app, argc, argv, "fid_bench")) return *rc;
  try {
    const Device dev = device == "cuda" ? Device::CUDA : Device::CPU;
    auto net = eval::load_inception(weights, dev);
    net->set_resize(models::InceptionV3::Resize::kTF);
    net->set_input_range(models::InceptionV3::InputRange::kTF);
    // Image n, pixel (y, x): (n * 37 + y * 11 + x * 7) % 256, the loader's v / 127.5 - 1.
    Tensor host = Tensor::empty(Shape{batch, size, size, 3});
    float* p = host.data<float>();
    for (int n = 0; n < batch; ++n)
      for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x)
          for (int c = 0; c < 3; ++c)
            p[((n * size + y) * size + x) * 3 + c] =
                float((n * 37 + y * 11 + x * 7) % 256) / 127.5f - 1.f;
    const Tensor in = host.to(dev);
    NoGradGuard no_grad;
    auto run = [&] {
      const auto y = net->forward(Var(in));
      (void)y.features.value().to(Device::CPU);  // waits for the device
    };
    run();  // warm-up: convolution plans, memory
    std::vector<double> ips;
    for (int r = 0; r < reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int b = 0; b < batches; ++b) run();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ips.push_back(double(batch) * batches / s);
    }
    std::sort(ips.begin(), ips.end());
    std::printf(
        "{\"engine\": \"gan-engine\", \"device\": \"%s\", \"size\": %d, \"batch\": %d, "
        "\"images_per_s\": %.2f, \"min\": %.2f, \"max\": %.2f, \"threads\": %d}\n",
        device.c_str(), size, batch, ips[ips.size() / 2], ips.front(), ips.back(),
        kernels::cpu::num_threads());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fid_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
