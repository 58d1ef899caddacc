// 8-bit images: decoding (PNG via libpng, JPEG via libjpeg-turbo), resizing
// (stb_image_resize), padding and fitting to a square, PNG encoding (stb_image_write), sample grids
// from a tensor of generated images, and attention-map overlays. See docs/io.md.
//
// An Image is rows top to bottom, channels interleaved: pixel (y, x) channel k is
// pixels[(y * width + x) * channels + k]; layout (H, W, C), C = 1 (gray) or 3 (RGB).
// Errors are gan::Error with one line "<who>: <path>: <problem>" (who = "image" unless the caller
// names itself, e.g. the data loader passes "data").
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tensor.h"

namespace gan::img {

struct Image {
  int height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;  // (H, W, C)

  Image() = default;
  // Zero-initialised (or filled with `value`) image of the given size.
  Image(int height, int width, int channels, uint8_t value = 0);

  bool empty() const { return pixels.empty(); }
  size_t size() const { return pixels.size(); }
  uint8_t* at(int y, int x) { return pixels.data() + (size_t(y) * width + x) * channels; }
  const uint8_t* at(int y, int x) const {
    return pixels.data() + (size_t(y) * width + x) * channels;
  }
};

// Decodes a PNG or JPEG file (recognised by its first bytes, whatever its name); any other format
// is refused. channels = 1 converts to gray, 3 to RGB (alpha is dropped); 0 keeps the file's
// colour: gray (with or without alpha) -> 1, else 3. At most 16384 pixels a side.
// Errors: "<who>: <path>: cannot open (<strerror>)", "<who>: <path>: cannot decode (<reason>)"
// with reason "PNG: <libpng's message>", "JPEG: <libjpeg's message>" or "not a PNG or JPEG file".
// min_side > 0 (JPEG only; PNG ignores it): a fast, approximate decode for images about to be
// shrunk. libjpeg-turbo scales by 1/2, 1/4 or 1/8 in the DCT domain (the smallest scale whose
// sides stay >= min_side), as PIL's Image.draft does; the pixels differ from a full decode
// followed by a box filter by a few levels.
Image decode_file(const std::string& path, int channels = 3, std::string_view who = "image",
                  int min_side = 0);
Image decode_memory(const uint8_t* data, size_t size, int channels = 3,
                    std::string_view what = "image: <memory>", int min_side = 0);

// Gray <-> RGB. to_gray uses the ITU-R 601-2 luma (as PIL's convert("L")):
// L = (19595 R + 38470 G + 7471 B + 32768) >> 16. Both return the input unchanged when it already
// has the requested channels.
Image to_rgb(const Image& src);
Image to_gray(const Image& src);
Image to_channels(const Image& src, int channels);  // channels 1 or 3

// Resamples to width x height. Along an axis that shrinks, stb's box filter (area average: exact
// box for integer ratios); along an axis that grows, Catmull-Rom. Linear colour space, clamped
// edges. Returns a copy when the size does not change.
Image resize(const Image& src, int width, int height);

// Pads with `value` to width x height (each at least the source's), the source centred (an odd
// margin puts the extra pixel on the bottom/right).
Image pad(const Image& src, int width, int height, uint8_t value = 0);
// Pads to a square of side max(height, width).
Image pad_to_square(const Image& src, uint8_t value = 0);
// The largest centred square.
Image center_crop_square(const Image& src);

// How an image is brought to size x size:
//   Resize: resampled to size x size (the aspect ratio is not kept);
//   Pad:    kept as is when it fits, else shrunk to fit (aspect kept), then centred on a
//           size x size background (Fashion-MNIST 28x28 -> 32: 2 px on each side);
//   Crop:   centre-cropped to a square, then resampled to size x size.
enum class Fit { Resize, Pad, Crop };
Image fit(const Image& src, int size, Fit mode, uint8_t background = 0);
// "resize", "pad", "crop" (throws on anything else); and back.
Fit parse_fit(std::string_view name);
const char* fit_name(Fit mode);

// PNG encoding. encode_png returns the file bytes; write_png writes them to `path` directly;
// write_png_atomic writes a temporary file in the same directory, fsyncs it and rename(2)s it over
// `path`, so a reader never sees a half-written image.
// Errors: "image: <path>: cannot write (<strerror>)", "image: cannot encode PNG (...)".
std::vector<uint8_t> encode_png(const Image& image);
void write_png(const std::string& path, const Image& image);
void write_png_atomic(const std::string& path, const Image& image);
// JPEG (baseline, quality 1..100), written directly; for tests and previews.
void write_jpeg(const std::string& path, const Image& image, int quality = 95);

// Tiles equally sized images (same channels) into rows of `cols`, with `padding` pixels of
// `background` between and around them (torchvision.utils.make_grid's layout).
Image tile(const std::vector<Image>& images, int cols, int padding = 2, uint8_t background = 0);

// A sample grid from generated images: images (N, H, W, C) float32 in [-1, 1], on any device
// (copied to the host), C = 1 or 3. Each value maps to uint8(clamp((x + 1) / 2, 0, 1) * 255 + 0.5)
// (torchvision's make_grid(normalize to [-1, 1]) + save_image). Gray images are replicated to RGB.
// `cols` images per row (torchvision's nrow), rows = ceil(N / cols), `padding` pixels of
// `background` around each image. Returns RGB (H, W, 3).
Image make_grid(const Tensor& images, int cols = 8, int padding = 2, uint8_t background = 0);
// A generated value in [-1, 1] as 8 bits: uint8(clamp((x + 1) / 2, 0, 1) * 255 + 0.5), NaN -> 0
// (make_grid's and tensor_image's mapping).
uint8_t to_u8(float x);
// One image of a batch as uint8 (same mapping as make_grid; channels kept).
Image tensor_image(const Tensor& images, int64_t index);

// Attention-map overlay: `heat` (heat_h, heat_w) non-negative weights, normalised by its maximum
// (all zero stays zero), upsampled to the image size by nearest neighbour (each heat cell covers a
// block of pixels), coloured with a jet colormap (blue -> cyan -> yellow -> red) and blended over
// the image: out = (1 - alpha) * image + alpha * colour. The query cell (query_y, query_x), in heat
// coordinates, is outlined in white with a black border (at least 3x3 pixels). Gray input is
// converted to RGB; returns RGB. query_y < 0 draws no marker.
Image overlay_heatmap(const Image& image, const std::vector<float>& heat, int heat_h, int heat_w,
                      int query_y = -1, int query_x = -1, float alpha = 0.5f);
// The jet colormap at v in [0, 1] (clamped): RGB.
void colormap_jet(float v, uint8_t rgb[3]);

}  // namespace gan::img
