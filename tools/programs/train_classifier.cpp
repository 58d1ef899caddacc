// train_classifier: trains gan_eval's default feature network (models/classifier.h) on
// Fashion-MNIST or MNIST with this engine, reports its test accuracy and writes it as safetensors.
// The committed weights (models/weights/fashion_mnist_classifier.safetensors) came from
//   build/train_classifier --data /usr/share/datasets/fashion-mnist --epochs 3 --seed 1
//     --out models/weights/fashion_mnist_classifier.safetensors
// (docs/metrics.md has the accuracy and the time it took).
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "engine/adam.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "tools/eval/feature_nets.h"
#include "tools/eval/features.h"
#include "tools/io/data.h"
#include "tools/programs/cli.h"

namespace {

using namespace gan;

double accuracy(eval::Classifier& net, std::shared_ptr<const data::Dataset> test, Device dev) {
  const eval::Extracted e = eval::extract(net, test, 500, dev);
  const std::vector<int> p = eval::predictions(e.logits);
  int64_t right = 0;
  for (size_t i = 0; i < p.size(); ++i) right += p[i] == test->labels[i];
  return double(right) / double(p.size());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"train_classifier: the feature network of gan_eval (Fashion-MNIST/MNIST)"};
  std::string data_dir = data::kFashionMnistDir, out, device = "auto";
  int epochs = 3, batch = 64, width = 32, features = 128;
  double lr = 1e-3;
  int64_t seed = 1, limit = 0;
  bool hflip = false;
  app.add_option("--data", data_dir, "Fashion-MNIST or MNIST directory (IDX files with labels)")
      ->capture_default_str();
  app.add_option("--out", out, "output .safetensors")->required();
  app.add_option("--epochs", epochs, "epochs")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--batch-size", batch, "batch size")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--lr", lr, "Adam learning rate, decayed linearly to 0")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--width", width, "channels of the first conv")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--features", features, "size of the feature layer")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--limit", limit, "train on the first N images only (tests)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--hflip", hflip, "random horizontal flips");
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  app.add_option("--device", device, "auto, cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  if (auto rc = cli::parse(app, argc, argv, "train_classifier")) return *rc;

  try {
    Device dev = Device::CPU;
    if (device == "cuda" || (device == "auto" && cuda_available())) dev = Device::CUDA;
    auto train = std::make_shared<data::Dataset>(data::load_fashion_mnist(data_dir, true));
    auto test = std::make_shared<const data::Dataset>(data::load_fashion_mnist(data_dir, false));
    GAN_CHECK(!train->labels.empty() && !test->labels.empty(),
              fmt::format("train_classifier: {}: the labels files are missing", data_dir));
    if (limit > 0 && limit < train->count) {
      train->truncate(limit);
    }
    eval::ClassifierConfig cfg;
    cfg.width = width, cfg.features = features;
    Generator gen(uint64_t(seed), dev);
    eval::Classifier net(cfg, gen);
    fmt::print("train_classifier: {} on {} ({} train, {} test), {} parameters, device {}\n",
               net.describe(), data_dir, train->count, test->count, net.num_parameters(),
               device_name(dev));

    data::LoaderOptions o;
    o.image_size = cfg.image_size, o.channels = cfg.channels, o.batch_size = batch;
    o.fit = img::Fit::Pad, o.hflip = hflip, o.seed = uint64_t(seed), o.device = dev;
    data::Loader loader(train, o);
    AdamOptions ao;
    ao.lr = lr;
    Adam opt(net.parameters(), ao);
    const int64_t per_epoch = loader.batches_per_epoch(), total = per_epoch * epochs;
    std::vector<float> onehot(size_t(batch) * cfg.classes);
    const auto t0 = std::chrono::steady_clock::now();
    double acc = 0;
    for (int e = 0; e < epochs; ++e) {
      const std::vector<int64_t> order = loader.permutation(e);
      net.train();
      double loss_sum = 0;
      for (int64_t s = 0; s < per_epoch; ++s) {
        opt.set_lr(lr * (1.0 - double(e * per_epoch + s) / double(total)));
        std::fill(onehot.begin(), onehot.end(), 0.f);
        for (int i = 0; i < batch; ++i)
          onehot[size_t(i) * cfg.classes +
                 size_t(train->labels[size_t(order[size_t(s * batch + i)])])] = 1.f;
        const Tensor t = Tensor::from_vector(onehot, Shape{batch, cfg.classes}, dev);
        Var loss = softmax_cross_entropy(net.forward(Var(loader.next())).logits, t);
        zero_grad(net.parameters());
        backward(loss);
        opt.step();
        if (s % 100 == 0) loss_sum += double(loss.value().to(Device::CPU).to_vector()[0]);
      }
      acc = accuracy(net, test, dev);
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      fmt::print("epoch {}: loss {:.4f} (sampled), test accuracy {:.2f}%, {:.0f} s\n", e + 1,
                 loss_sum / double((per_epoch + 99) / 100), 100 * acc, secs);
      std::fflush(stdout);
    }
    std::string cmd;
    for (int i = 0; i < argc; ++i) cmd += (i ? " " : "") + std::string(argv[i]);
    eval::save_classifier(
        out, net,
        {{"test_accuracy", fmt::format("{:.4f}", acc)}, {"dataset", data_dir}, {"command", cmd}});
    fmt::print("train_classifier: wrote {} (test accuracy {:.2f}%)\n", out, 100 * acc);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
