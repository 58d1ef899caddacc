// The stb implementations live here, and only here: compiled static (internal linkage) so that they
// cannot clash with another copy of stb linked into the same program.
#include "tools/io/image.h"

#include "tools/io/fileio.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include <fmt/format.h>
#include <jpeglib.h>
#include <png.h>

#include "engine/error.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
// stb writes PNG and JPEG and resizes; decoding is libpng's and libjpeg-turbo's (below).
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "stb_image_write.h"
#define STB_IMAGE_RESIZE_STATIC
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include "stb_image_resize.h"
#pragma GCC diagnostic pop

namespace gan::img {
namespace {

constexpr unsigned kMaxSide = 16384;
// A decompression-bomb guard: a 1.4 KB JPEG declaring 16384 x 16384 pixels kept the fuzzer's
// decoder busy past its 10 s timeout. GAN datasets hold images of at most a few megapixels.
constexpr uint64_t kMaxPixels = uint64_t(1) << 24;  // 16.8 megapixels (4096 x 4096)

void check_channels(int channels, const char* what) {
  GAN_CHECK(channels == 1 || channels == 3,
            fmt::format("image: {}: {} channels (expected 1 or 3)", what, channels));
}

void check_image(const Image& im, const char* what) {
  GAN_CHECK(im.height > 0 && im.width > 0 &&
                im.pixels.size() == size_t(im.height) * im.width * im.channels,
            fmt::format("image: {}: invalid image {}x{}x{} with {} bytes", what, im.height,
                        im.width, im.channels, im.pixels.size()));
  check_channels(im.channels, what);
}

// An interleaved 8-bit buffer of n = 1..4 channels (gray, gray+alpha, RGB, RGBA) to our gray or
// RGB (alpha dropped); channels 0 keeps gray as 1 and colour as 3.
Image from_interleaved(const uint8_t* data, int w, int h, int n, int channels) {
  const int c = channels ? channels : (n <= 2 ? 1 : 3);
  Image out(h, w, c);
  const size_t count = size_t(w) * h;
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* p = data + i * n;
    uint8_t* q = out.pixels.data() + i * c;
    if (n <= 2) {  // gray (+ alpha)
      for (int k = 0; k < c; ++k) q[k] = p[0];
    } else if (c == 3) {
      q[0] = p[0], q[1] = p[1], q[2] = p[2];
    } else {
      q[0] = uint8_t((19595u * p[0] + 38470u * p[1] + 7471u * p[2] + 32768u) >> 16);
    }
  }
  return out;
}

std::string errno_text() { return std::strerror(errno); }

// JPEG through libjpeg-turbo (stb_image 2.27, Debian 12's, writes out of bounds on crafted JPEGs:
// fuzz_image_folder found two such inputs in seconds, fuzz/regressions/image_folder/). Errors
// come back as one line; warnings (e.g. a truncated file, decoded as far as it goes) are kept
// quiet, as stb's decoder accepted such files too.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

extern "C" void jpeg_fail(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}
extern "C" void jpeg_quiet(j_common_ptr, int) {}

// Decodes into `out` (gray or RGB as the file is); false with `why` on failure. No C++ object is
// created between setjmp and a longjmp back to it.
// min_side > 0: decodes at 1/8, 1/4 or 1/2 scale (libjpeg's DCT-domain scaling, the smallest
// whose sides stay >= min_side), which skips most of the inverse DCT and the colour conversion.
bool decode_jpeg(const uint8_t* data, size_t size, Image& out, std::string& why, int min_side) {
  jpeg_decompress_struct cinfo{};
  JpegError err{};
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.emit_message = jpeg_quiet;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    why = err.message;
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.image_width > kMaxSide || cinfo.image_height > kMaxSide) {
    std::snprintf(err.message, sizeof err.message, "%ux%u is larger than %d pixels a side",
                  cinfo.image_width, cinfo.image_height, kMaxSide);
    std::longjmp(err.jump, 1);
  }
  if (uint64_t(cinfo.image_width) * cinfo.image_height > kMaxPixels) {
    std::snprintf(err.message, sizeof err.message, "%ux%u is more than %llu pixels",
                  cinfo.image_width, cinfo.image_height, (unsigned long long)kMaxPixels);
    std::longjmp(err.jump, 1);
  }
  cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  if (min_side > 0) {
    const unsigned side = std::min(cinfo.image_width, cinfo.image_height);
    for (unsigned d : {8u, 4u, 2u}) {
      if ((side + d - 1) / d >= unsigned(min_side)) {
        cinfo.scale_num = 1;
        cinfo.scale_denom = d;
        break;
      }
    }
  }
  jpeg_start_decompress(&cinfo);
  out.width = int(cinfo.output_width);
  out.height = int(cinfo.output_height);
  out.channels = int(cinfo.output_components);
  out.pixels.resize(size_t(out.width) * size_t(out.height) * size_t(out.channels));
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out.pixels.data() +
                   size_t(cinfo.output_scanline) * size_t(out.width) * size_t(out.channels);
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

// PNG through libpng's simplified API (stb 2.27's PNG reader passes a null pointer to memcpy on an
// empty IDAT chunk: fuzz_image_folder). Read as gray+alpha or RGBA, 8 bits, the alpha dropped by
// the caller as stb's reader did.
bool decode_png(const uint8_t* data, size_t size, Image& out, std::string& why) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&img, data, size)) {
    why = img.message;
    return false;
  }
  if (img.width > kMaxSide || img.height > kMaxSide) {
    why = fmt::format("{}x{} is larger than {} pixels a side", img.width, img.height, kMaxSide);
    png_image_free(&img);
    return false;
  }
  if (uint64_t(img.width) * img.height > kMaxPixels) {
    why = fmt::format("{}x{} is more than {} pixels", img.width, img.height, kMaxPixels);
    png_image_free(&img);
    return false;
  }
  const bool color = (img.format & PNG_FORMAT_FLAG_COLOR) != 0;
  img.format = color ? PNG_FORMAT_RGBA : PNG_FORMAT_GA;
  out.width = int(img.width);
  out.height = int(img.height);
  out.channels = color ? 4 : 2;
  out.pixels.resize(PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, out.pixels.data(), 0, nullptr)) {
    why = img.message;
    png_image_free(&img);
    return false;
  }
  return true;
}

void append_bytes(void* context, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(context);
  const auto* p = static_cast<const uint8_t*>(data);
  out->insert(out->end(), p, p + size);
}

}  // namespace

Image::Image(int h, int w, int c, uint8_t value)
    : height(h), width(w), channels(c), pixels(size_t(h) * w * c, value) {}

Image decode_file(const std::string& path, int channels, std::string_view who, int min_side) {
  GAN_CHECK(channels == 0 || channels == 1 || channels == 3,
            fmt::format("{}: {}: cannot decode to {} channels (expected 0, 1 or 3)", who, path,
                        channels));
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  GAN_CHECK(f != nullptr, fmt::format("{}: {}: cannot open ({})", who, path, errno_text()));
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f.get())) > 0)
    bytes.insert(bytes.end(), buf, buf + got);
  GAN_CHECK(!std::ferror(f.get()), fmt::format("{}: {}: read error ({})", who, path, errno_text()));
  return decode_memory(bytes.data(), bytes.size(), channels, fmt::format("{}: {}", who, path),
                       min_side);
}

Image decode_memory(const uint8_t* data, size_t size, int channels, std::string_view what,
                    int min_side) {
  GAN_CHECK(channels == 0 || channels == 1 || channels == 3,
            fmt::format("{}: cannot decode to {} channels (expected 0, 1 or 3)", what, channels));
  GAN_CHECK(size <= size_t(INT32_MAX),
            fmt::format("{}: cannot decode ({} bytes is too large)", what, size));
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
    Image im;
    std::string why;
    GAN_CHECK(decode_jpeg(data, size, im, why, min_side),
              fmt::format("{}: cannot decode (JPEG: {})", what, why));
    return from_interleaved(im.pixels.data(), im.width, im.height, im.channels, channels);
  }
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  GAN_CHECK(size >= 8 && std::memcmp(data, kPng, 8) == 0,
            fmt::format("{}: cannot decode (not a PNG or JPEG file)", what));
  Image im;
  std::string why;
  GAN_CHECK(decode_png(data, size, im, why), fmt::format("{}: cannot decode (PNG: {})", what, why));
  return from_interleaved(im.pixels.data(), im.width, im.height, im.channels, channels);
}

Image to_rgb(const Image& src) {
  check_image(src, "to_rgb");
  if (src.channels == 3) return src;
  return from_interleaved(src.pixels.data(), src.width, src.height, 1, 3);
}

Image to_gray(const Image& src) {
  check_image(src, "to_gray");
  if (src.channels == 1) return src;
  return from_interleaved(src.pixels.data(), src.width, src.height, 3, 1);
}

Image to_channels(const Image& src, int channels) {
  check_channels(channels, "to_channels");
  return channels == 1 ? to_gray(src) : to_rgb(src);
}

Image resize(const Image& src, int width, int height) {
  check_image(src, "resize");
  GAN_CHECK(width > 0 && height > 0,
            fmt::format("image: resize: invalid target size {}x{}", height, width));
  if (width == src.width && height == src.height) return src;
  Image out(height, width, src.channels);
  const stbir_filter fh = width < src.width ? STBIR_FILTER_BOX : STBIR_FILTER_CATMULLROM;
  const stbir_filter fv = height < src.height ? STBIR_FILTER_BOX : STBIR_FILTER_CATMULLROM;
  const int ok =
      stbir_resize(src.pixels.data(), src.width, src.height, 0, out.pixels.data(), width, height, 0,
                   STBIR_TYPE_UINT8, src.channels, STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP,
                   STBIR_EDGE_CLAMP, fh, fv, STBIR_COLORSPACE_LINEAR, nullptr);
  GAN_CHECK(
      ok, fmt::format("image: resize {}x{} -> {}x{} failed", src.height, src.width, height, width));
  return out;
}

Image pad(const Image& src, int width, int height, uint8_t value) {
  check_image(src, "pad");
  GAN_CHECK(width >= src.width && height >= src.height,
            fmt::format("image: pad: target {}x{} is smaller than the image {}x{}", height, width,
                        src.height, src.width));
  if (width == src.width && height == src.height) return src;
  Image out(height, width, src.channels, value);
  const int top = (height - src.height) / 2, left = (width - src.width) / 2;
  const size_t row = size_t(src.width) * src.channels;
  for (int y = 0; y < src.height; ++y) std::memcpy(out.at(top + y, left), src.at(y, 0), row);
  return out;
}

Image pad_to_square(const Image& src, uint8_t value) {
  const int side = std::max(src.height, src.width);
  return pad(src, side, side, value);
}

Image center_crop_square(const Image& src) {
  check_image(src, "center_crop_square");
  const int side = std::min(src.height, src.width);
  if (src.height == src.width) return src;
  Image out(side, side, src.channels);
  const int top = (src.height - side) / 2, left = (src.width - side) / 2;
  const size_t row = size_t(side) * src.channels;
  for (int y = 0; y < side; ++y) std::memcpy(out.at(y, 0), src.at(top + y, left), row);
  return out;
}

Image fit(const Image& src, int size, Fit mode, uint8_t background) {
  check_image(src, "fit");
  GAN_CHECK(size > 0, fmt::format("image: fit: invalid size {}", size));
  switch (mode) {
    case Fit::Resize:
      return resize(src, size, size);
    case Fit::Crop:
      return resize(center_crop_square(src), size, size);
    case Fit::Pad: {
      if (src.height <= size && src.width <= size) return pad(src, size, size, background);
      // Shrink so that the longer side is `size`, keeping the aspect ratio (at least 1 px).
      const double s = double(size) / std::max(src.height, src.width);
      const int w = std::clamp(int(std::lround(src.width * s)), 1, size);
      const int h = std::clamp(int(std::lround(src.height * s)), 1, size);
      return pad(resize(src, w, h), size, size, background);
    }
  }
  throw Error("image: fit: unknown mode");
}

Fit parse_fit(std::string_view name) {
  if (name == "resize") return Fit::Resize;
  if (name == "pad") return Fit::Pad;
  if (name == "crop") return Fit::Crop;
  throw Error(fmt::format("image: unknown fit mode '{}' (expected resize, pad or crop)", name));
}

const char* fit_name(Fit mode) {
  switch (mode) {
    case Fit::Resize:
      return "resize";
    case Fit::Pad:
      return "pad";
    case Fit::Crop:
      return "crop";
  }
  return "?";
}

std::vector<uint8_t> encode_png(const Image& image) {
  check_image(image, "encode_png");
  std::vector<uint8_t> out;
  const int ok =
      stbi_write_png_to_func(&append_bytes, &out, image.width, image.height, image.channels,
                             image.pixels.data(), image.width * image.channels);
  GAN_CHECK(ok && !out.empty(), fmt::format("image: cannot encode PNG ({}x{}x{})", image.height,
                                            image.width, image.channels));
  return out;
}

void write_png(const std::string& path, const Image& image) {
  const std::vector<uint8_t> png = encode_png(image);
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  GAN_CHECK(f != nullptr, fmt::format("image: {}: cannot write ({})", path, errno_text()));
  const bool ok =
      std::fwrite(png.data(), 1, png.size(), f.get()) == png.size() && std::fflush(f.get()) == 0;
  GAN_CHECK(ok, fmt::format("image: {}: cannot write ({})", path, errno_text()));
  FILE* raw = f.release();
  GAN_CHECK(std::fclose(raw) == 0, fmt::format("image: {}: cannot write ({})", path, errno_text()));
}

void write_png_atomic(const std::string& path, const Image& image) {
  const std::vector<uint8_t> png = encode_png(image);
  io::write_file_atomic(path, png.data(), png.size(), "image");
}

void write_jpeg(const std::string& path, const Image& image, int quality) {
  check_image(image, "write_jpeg");
  const int ok = stbi_write_jpg(path.c_str(), image.width, image.height, image.channels,
                                image.pixels.data(), std::clamp(quality, 1, 100));
  GAN_CHECK(ok, fmt::format("image: {}: cannot write JPEG", path));
}

Image tile(const std::vector<Image>& images, int cols, int padding, uint8_t background) {
  GAN_CHECK(!images.empty(), "image: tile: no images");
  GAN_CHECK(cols > 0 && padding >= 0,
            fmt::format("image: tile: invalid cols {} or padding {}", cols, padding));
  const Image& first = images.front();
  for (const Image& im : images) {
    check_image(im, "tile");
    GAN_CHECK(im.height == first.height && im.width == first.width && im.channels == first.channels,
              fmt::format("image: tile: image {}x{}x{} differs from the first {}x{}x{}", im.height,
                          im.width, im.channels, first.height, first.width, first.channels));
  }
  const int n = int(images.size());
  const int ncol = std::min(cols, n), nrow = (n + cols - 1) / cols;
  const int cell_h = first.height + padding, cell_w = first.width + padding;
  Image out(nrow * cell_h + padding, ncol * cell_w + padding, first.channels, background);
  const size_t row = size_t(first.width) * first.channels;
  for (int i = 0; i < n; ++i) {
    const int y0 = (i / cols) * cell_h + padding, x0 = (i % cols) * cell_w + padding;
    for (int y = 0; y < first.height; ++y) std::memcpy(out.at(y0 + y, x0), images[i].at(y, 0), row);
  }
  return out;
}

uint8_t to_u8(float x) {
  float v = (x + 1.0f) * 0.5f;
  v = std::isnan(v) ? 0.0f : std::clamp(v, 0.0f, 1.0f);
  return uint8_t(v * 255.0f + 0.5f);
}

Image tensor_image(const Tensor& images, int64_t index) {
  GAN_CHECK(images.defined() && images.ndim() == 4 && images.dtype() != DType::BF16,
            "image: expected images (N, H, W, C) float32, got " +
                (images.defined() ? images.str() : std::string("an undefined tensor")));
  const int64_t n = images.dim(0), h = images.dim(1), w = images.dim(2), c = images.dim(3);
  GAN_CHECK(c == 1 || c == 3,
            fmt::format("image: expected 1 or 3 channels, got {}", images.shape().str()));
  GAN_CHECK(index >= 0 && index < n,
            fmt::format("image: index {} out of range for {}", index, images.shape().str()));
  const size_t per = size_t(h * w * c);
  // Copy only the one image (a view of the storage would need an offset; the batch is small).
  const std::vector<float> all = images.to_vector();
  Image out{int(h), int(w), int(c)};
  for (size_t i = 0; i < per; ++i) out.pixels[i] = to_u8(all[size_t(index) * per + i]);
  return out;
}

Image make_grid(const Tensor& images, int cols, int padding, uint8_t background) {
  GAN_CHECK(images.defined() && images.ndim() == 4 && images.dtype() != DType::BF16,
            "image: make_grid: expected images (N, H, W, C) float32, got " +
                (images.defined() ? images.str() : std::string("an undefined tensor")));
  const int64_t n = images.dim(0), h = images.dim(1), w = images.dim(2), c = images.dim(3);
  GAN_CHECK(
      n > 0 && h > 0 && w > 0 && (c == 1 || c == 3),
      "image: make_grid: expected N >= 1 images with 1 or 3 channels, got " + images.shape().str());
  const std::vector<float> all = images.to_vector();  // host copy (synchronises)
  const size_t per = size_t(h * w);
  std::vector<Image> tiles;
  tiles.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    Image im(int(h), int(w), 3);
    const float* src = all.data() + size_t(i) * per * size_t(c);
    for (size_t p = 0; p < per; ++p)
      for (int k = 0; k < 3; ++k) im.pixels[p * 3 + k] = to_u8(src[p * c + (c == 3 ? k : 0)]);
    tiles.push_back(std::move(im));
  }
  return tile(tiles, cols, padding, background);
}

void colormap_jet(float v, uint8_t rgb[3]) {
  v = std::isnan(v) ? 0.0f : std::clamp(v, 0.0f, 1.0f);
  auto ramp = [](float x) { return uint8_t(std::clamp(x, 0.0f, 1.0f) * 255.0f + 0.5f); };
  rgb[0] = ramp(1.5f - std::fabs(4.0f * v - 3.0f));
  rgb[1] = ramp(1.5f - std::fabs(4.0f * v - 2.0f));
  rgb[2] = ramp(1.5f - std::fabs(4.0f * v - 1.0f));
}

Image overlay_heatmap(const Image& image, const std::vector<float>& heat, int heat_h, int heat_w,
                      int query_y, int query_x, float alpha) {
  check_image(image, "overlay_heatmap");
  GAN_CHECK(heat_h > 0 && heat_w > 0 && heat.size() == size_t(heat_h) * heat_w,
            fmt::format("image: overlay_heatmap: heat map of {} values is not {}x{}", heat.size(),
                        heat_h, heat_w));
  GAN_CHECK(query_y < 0 || (query_y < heat_h && query_x >= 0 && query_x < heat_w),
            fmt::format("image: overlay_heatmap: query ({}, {}) outside the {}x{} heat map",
                        query_y, query_x, heat_h, heat_w));
  float peak = 0.0f;
  for (float v : heat)
    if (std::isfinite(v)) peak = std::max(peak, v);
  Image out = to_rgb(image);
  const int H = out.height, W = out.width;
  const float a = std::clamp(alpha, 0.0f, 1.0f);
  for (int y = 0; y < H; ++y) {
    const int hy = int(int64_t(y) * heat_h / H);
    for (int x = 0; x < W; ++x) {
      const int hx = int(int64_t(x) * heat_w / W);
      const float v = heat[size_t(hy) * heat_w + hx];
      uint8_t c[3];
      colormap_jet(peak > 0.0f && std::isfinite(v) ? std::max(v, 0.0f) / peak : 0.0f, c);
      uint8_t* p = out.at(y, x);
      for (int k = 0; k < 3; ++k) p[k] = uint8_t((1.0f - a) * p[k] + a * c[k] + 0.5f);
    }
  }
  if (query_y >= 0) {
    // The query cell's pixel rectangle [y0, y1) x [x0, x1), grown to at least 3x3 around its
    // centre.
    int y0 = int(int64_t(query_y) * H / heat_h), y1 = int(int64_t(query_y + 1) * H / heat_h);
    int x0 = int(int64_t(query_x) * W / heat_w), x1 = int(int64_t(query_x + 1) * W / heat_w);
    if (y1 - y0 < 3) {
      const int cy = (y0 + std::max(y1, y0 + 1) - 1) / 2;
      y0 = cy - 1, y1 = cy + 2;
    }
    if (x1 - x0 < 3) {
      const int cx = (x0 + std::max(x1, x0 + 1) - 1) / 2;
      x0 = cx - 1, x1 = cx + 2;
    }
    auto paint = [&](int y, int x, uint8_t v) {
      if (y < 0 || y >= H || x < 0 || x >= W) return;
      uint8_t* p = out.at(y, x);
      p[0] = p[1] = p[2] = v;
    };
    // Black outer ring, then white ring on the cell's border.
    for (int ring = 1; ring >= 0; --ring) {
      const uint8_t v = ring ? 0 : 255;
      const int ya = y0 - ring, yb = y1 - 1 + ring, xa = x0 - ring, xb = x1 - 1 + ring;
      for (int x = xa; x <= xb; ++x) paint(ya, x, v), paint(yb, x, v);
      for (int y = ya; y <= yb; ++y) paint(y, xa, v), paint(y, xb, v);
    }
  }
  return out;
}

}  // namespace gan::img
