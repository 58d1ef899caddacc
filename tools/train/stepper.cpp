#include "tools/train/stepper.h"

#include <cstring>
#include <string>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/grad.h"
#include "engine/ops.h"
#include "engine/tensor_ops.h"
#include "engine/weight_cast.h"
#include "kernels/common.h"
#include "kernels/cpu/ops.h"
#include "kernels/elementwise.h"

namespace gan::train {

void set_requires_grad(nn::Module& m, bool on) {
  for (auto& [name, p] : m.named_parameters()) p.node()->requires_grad = on;
}

Stepper::Stepper(const Options& o, models::Gan& net, models::Gan* ema, Adam& opt_g, Adam& opt_d,
                 Generator& gen, dist::Communicator* comm)
    : o_(o), net_(net), opt_g_(opt_g), opt_d_(opt_d), gen_(gen) {
  const Device dev = gen.device();
  z_ = Tensor::empty(Shape{o.batch_size, net.z_dim}, dev);
  stats_ = Tensor::zeros(Shape{kStats}, dev);
  guard_ = Tensor::zeros(Shape{2}, dev);
  eps_ = Tensor::empty(Shape{o.batch_size, 1, 1, 1}, dev);
  // The data-parallel path also at world size 1 when a backend was asked for (its overhead).
  if (comm && (comm->size() > 1 || std::string(comm->backend()) != "local")) {
    comm_ = comm;
    const int64_t global = int64_t(o.batch_size) * comm->size();
    z_global_ = Tensor::empty(Shape{global, net.z_dim}, dev);
    eps_global_ = Tensor::empty(Shape{global, 1, 1, 1}, dev);
    reduce_g_ = std::make_unique<dist::GradReducer>(*comm, opt_g.params());
    reduce_d_ = std::make_unique<dist::GradReducer>(*comm, opt_d.params());
  }
  // The EMA's parameter lists, made once (not per step).
  g_params_ = net.g->parameters();
  if (ema) ema_params_ = ema->g->parameters();
  if (ema && o.ema_buffers == "average") {
    const auto src = net.g->named_buffers(), dst = ema->g->named_buffers();
    for (size_t i = 0; i < src.size(); ++i)
      if (!src[i].first.ends_with("num_batches_tracked")) {
        g_buffers_.push_back(src[i].second);
        ema_buffers_.push_back(dst[i].second);
      }
  }
}

void Stepper::set_steps_done(int64_t steps) {
  guard_.copy_from(Tensor::from_vector(std::vector<float>{float(steps), 0.f}, Shape{2}));
}

int64_t Stepper::first_nonfinite_step() const { return int64_t(guard_.to_vector()[1]); }

void Stepper::use_fixed_noise(std::vector<Tensor> z, std::vector<Tensor> eps) {
  fixed_z_ = std::move(z);
  fixed_eps_ = std::move(eps);
}

void Stepper::set_labels(std::vector<Tensor> real, std::vector<Tensor> fake) {
  GAN_CHECK(int(real.size()) == o_.n_dis && int(fake.size()) == o_.n_dis + 1,
            "stepper: labels for n_dis real batches and n_dis + 1 fake batches expected");
  real_labels_ = std::move(real);
  fake_labels_ = std::move(fake);
}

void Stepper::draw_rows(const Tensor& global, const Tensor& local, bool normal) {
  Tensor g = global;
  if (normal)
    gen_.normal_(g);
  else
    gen_.uniform_(g);
  const size_t bytes = local.nbytes();
  const char* src = static_cast<const char*>(g.raw()) + size_t(comm_->rank()) * bytes;
  if (local.is_cuda())
    GAN_CUDA_CHECK(
        cudaMemcpyAsync(local.raw(), src, bytes, cudaMemcpyDeviceToDevice, cuda::stream()));
  else
    std::memcpy(local.raw(), src, bytes);
}

void Stepper::next_z() {
  if (fixed_z_.empty() && comm_) return draw_rows(z_global_, z_, true);
  if (fixed_z_.empty()) return gen_.normal_(z_);
  z_.copy_from(fixed_z_.front().reshape(z_.shape()));
  fixed_z_.erase(fixed_z_.begin());
}

void Stepper::next_eps() {
  if (fixed_eps_.empty() && comm_) return draw_rows(eps_global_, eps_, false);
  if (fixed_eps_.empty()) return gen_.uniform_(eps_);
  eps_.copy_from(fixed_eps_.front().reshape(eps_.shape()));
  fixed_eps_.erase(fixed_eps_.begin());
}

void Stepper::keep_scalar(int64_t i, const Var& v) {
  if (stats_.is_cuda())
    GAN_CUDA_CHECK(cudaMemcpyAsync(stats_.data<float>() + i, v.value().raw(), sizeof(float),
                                   cudaMemcpyDeviceToDevice, cuda::stream()));
  else
    stats_.data<float>()[i] = v.value().data<float>()[0];
}

namespace {

// |g| per sample over every axis but the first, and the gradient of D's output with respect to
// its input x (create_graph: a loss built from it reaches D's parameters).
Var input_gradient(models::GanNet& d, const Var& x, const Var& labels, Var* out = nullptr) {
  const Var y = d.forward(x, labels);
  if (out) *out = y;
  const Var ones(Tensor::full(y.shape(), 1.0, y.device(), y.value().dtype()));
  return grad({y}, {x}, {ones}, true)[0];
}

Var squared_norms(const Var& g) {
  std::vector<int> axes;
  for (int i = 1; i < g.shape().ndim; ++i) axes.push_back(i);
  return sum(mul(g, g), axes);
}

}  // namespace

void Stepper::iteration(const std::vector<Tensor>& reals, int64_t step) {
  // bf16 precision: each weight is rounded once per optimiser step, not at every use (the
  // optimisers' steps empty the cache: engine/weight_cast.h).
  WeightCastScope weight_casts;
  const bool bce = o_.loss == Loss::kBce;
  const bool gp = o_.gradient_penalty();
  const bool r1 = o_.r1 > 0 && step % o_.r1_every == 0;
  const bool cond = net_.g->num_classes() > 0;
  GAN_CHECK(!cond || !fake_labels_.empty(), "stepper: a conditional model needs set_labels()");
  // The one-hot labels of real batch k and of fake batch k (undefined: unconditional).
  auto real_y = [&](int k) { return cond ? Var(real_labels_[size_t(k)]) : Var(); };
  auto fake_y = [&](int k) { return cond ? Var(fake_labels_[size_t(k)]) : Var(); };
  set_requires_grad(*net_.d, true);
  set_requires_grad(*net_.g, false);
  for (int k = 0; k < o_.n_dis; ++k) {
    GAN_NVTX("D step");
    // R1 differentiates D(real) with respect to the real images.
    const Var real(reals[size_t(k)], r1);
    next_z();
    Var fake;
    {
      NoGradGuard ng;  // G is not differentiated here (its BatchNorm statistics still move)
      fake = net_.g->forward(models::latent_input(net_, Var(z_)), fake_y(k));
    }
    Var dr, penalty, norms;
    Var r1_grad;
    if (r1)
      r1_grad = input_gradient(*net_.d, real, real_y(k), &dr);
    else
      dr = net_.d->forward(real, real_y(k));
    const Var df = net_.d->forward(fake, fake_y(k));
    Var loss_d;
    if (bce)
      loss_d = add(bce_with_logits(dr, 1.0), bce_with_logits(df, 0.0));
    else if (o_.loss == Loss::kHinge)
      loss_d = hinge_d_loss(dr, df);
    else
      loss_d = sub(mean(df), mean(dr));
    if (gp) {
      // Interpolates x^ = real + eps (fake - real), eps ~ U(0, 1) per sample (device noise);
      // penalty mean_i (|grad D(x^_i)| - 1)^2, weighted by lambda.
      NvtxRange nvtx_gp("gradient penalty");
      next_eps();
      Tensor xh;
      {
        NoGradGuard ng;
        xh = add(real.detach(), mul(Var(eps_), sub(fake.detach(), real.detach()))).value();
      }
      // Conditional: an interpolate between a real and a fake of different classes is scored under
      // the real image's label (StudioGAN's choice).
      const Var g = input_gradient(*net_.d, Var(xh, true), real_y(k));
      norms = sqrt(squared_norms(g));
      const Var one(Tensor::full(Shape{}, 1.0, norms.device(), norms.value().dtype()));
      const Var dev = sub(norms, one);
      penalty = mean(mul(dev, dev));
      loss_d = add(loss_d, scale(penalty, o_.gp_lambda));
    }
    if (r1) {
      // R1 = gamma / 2 * mean_i |grad D(x_i)|^2 on real data; lazy: every k-th iteration, times k.
      NvtxRange nvtx_r1("R1 penalty");
      const Var sq = squared_norms(r1_grad);
      penalty = mean(sq);
      loss_d = add(loss_d, scale(penalty, 0.5 * o_.r1 * o_.r1_every));
      if (!norms.defined()) {
        NoGradGuard ng;
        norms = sqrt(sq.detach());
      }
    }
    zero_grad(opt_d_.params());
    if (reduce_d_) reduce_d_->begin();  // buckets all-reduced as backward finishes them
    backward(loss_d);
    if (reduce_d_) reduce_d_->finish();
    opt_d_.step();
    if (o_.loss == Loss::kWgan) {
      for (const Var& p : opt_d_.params()) clamp_(p.value(), -o_.wgan_clip, o_.wgan_clip);
      invalidate_weight_casts();
    }
    if (k + 1 == o_.n_dis) {
      NoGradGuard ng;
      keep_scalar(0, loss_d);
      keep_scalar(2, bce ? mean(sigmoid(dr.detach())) : mean(dr.detach()));
      keep_scalar(3, bce ? mean(sigmoid(df.detach())) : mean(df.detach()));
      if (penalty.defined()) {
        keep_scalar(4, penalty.detach());
        keep_scalar(5, mean(norms.detach()));
      }
    }
  }
  {
    // ---- generator (D's parameters need no gradient here)
    GAN_NVTX("G step");
    set_requires_grad(*net_.d, false);
    set_requires_grad(*net_.g, true);
    next_z();
    const Var fake = net_.g->forward(models::latent_input(net_, Var(z_)), fake_y(o_.n_dis));
    const Var out_fake = net_.d->forward(fake, fake_y(o_.n_dis));
    const Var loss_g = bce ? bce_with_logits(out_fake, 1.0) : hinge_g_loss(out_fake);
    zero_grad(opt_g_.params());
    if (reduce_g_) reduce_g_->begin();
    backward(loss_g);
    if (reduce_g_) reduce_g_->finish();
    opt_g_.step();
    keep_scalar(1, loss_g);
  }
  if (comm_) comm_->allreduce_mean({stats_});  // the global batch's means
  // The losses (stats_[0..1]) checked on the device: the first bad step is remembered.
  if (guard_.is_cuda())
    kernels::nonfinite_guard_cuda(stats_.data<float>(), 2, guard_.data<float>(), cuda::stream());
  else
    kernels::cpu::nonfinite_guard(stats_.data<float>(), 2, guard_.data<float>());
  if (!ema_params_.empty()) {
    // StudioGAN's Ema: a copy of G for G's first ema_start steps, then the average, gated on the
    // device by G's optimiser's step count (one launch on the GPU; graph replays follow it).
    GAN_NVTX("EMA");
    std::vector<Tensor> ema = ema_buffers_, cur = g_buffers_;
    for (size_t i = 0; i < ema_params_.size(); ++i)
      ema.push_back(ema_params_[i].value()), cur.push_back(g_params_[i].value());
    lerp_all_gated_(ema, cur, 1.0 - o_.ema, opt_g_.step_counter(), double(o_.ema_start));
  }
}

IterationGraph::IterationGraph(const std::vector<nn::Module*>& modules,
                               const std::function<void()>& body, size_t arena_bytes) {
  for (nn::Module* m : modules)
    for (auto& [name, b] : m->named_buffers())
      if (name.ends_with("num_batches_tracked")) counters_.emplace_back(b, b.data<double>()[0]);
  cudaStream_t st = cuda::stream();
  if (arena_bytes) arena_ = std::make_unique<cuda::CaptureArena>(arena_bytes);
  GAN_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  if (arena_) arena_->activate();
  try {
    body();
  } catch (...) {
    if (arena_) arena_->deactivate();
    cudaGraph_t g = nullptr;
    (void)cudaStreamEndCapture(st, &g);
    if (g) (void)cudaGraphDestroy(g);
    throw;
  }
  // A tensor made in the step and kept after it keeps its block: every replay rewrites it, as
  // it would rewrite memory the graph allocated itself.
  if (arena_) arena_->deactivate();
  cudaGraph_t g = nullptr;
  GAN_CUDA_CHECK(cudaStreamEndCapture(st, &g));
  cudaError_t e = cudaGraphGetNodes(g, nullptr, &nodes_);
  if (e == cudaSuccess) e = cudaGraphInstantiate(&exec_, g, 0);
  (void)cudaGraphDestroy(g);
  GAN_CUDA_CHECK(e);
  for (auto& [t, before] : counters_) {  // the capture ran nothing: undo, keep the delta
    const double after = t.data<double>()[0];
    t.data<double>()[0] = before;
    before = after - before;
  }
}

IterationGraph::~IterationGraph() {
  if (exec_) (void)cudaGraphExecDestroy(exec_);
}

void IterationGraph::replay() {
  GAN_CUDA_CHECK(cudaGraphLaunch(exec_, cuda::stream()));
  for (auto& [t, delta] : counters_) t.data<double>()[0] += delta;
}

}  // namespace gan::train
