// tools/image: decoding, conversion, resizing, fitting, PNG encoding, grids and overlays.
#include <catch2/catch.hpp>

#include "tests/harness.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/error.h"
#include "tools/io/image.h"

namespace fs = std::filesystem;
using gan::img::Image;

namespace {

using gan::test::TempDir;

Image gradient(int h, int w, int c) {
  Image im(h, w, c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k) im.at(y, x)[k] = uint8_t((y * 31 + x * 7 + k * 50) % 256);
  return im;
}

}  // namespace

TEST_CASE("image: PNG round trips through memory and files", "[io][cpu]") {
  TempDir dir;
  for (int c : {1, 3}) {
    const Image im = gradient(13, 17, c);
    const std::vector<uint8_t> png = gan::img::encode_png(im);
    REQUIRE(png.size() > 8);
    CHECK(png[1] == 'P');
    CHECK(png[2] == 'N');
    CHECK(png[3] == 'G');
    const Image back = gan::img::decode_memory(png.data(), png.size(), 0);
    CHECK(back.height == 13);
    CHECK(back.width == 17);
    CHECK(back.channels == c);
    CHECK(back.pixels == im.pixels);

    const std::string path = dir.file("im" + std::to_string(c) + ".png");
    gan::img::write_png_atomic(path, im);
    CHECK(gan::img::decode_file(path, 0).pixels == im.pixels);
    gan::img::write_png(dir.file("plain.png"), im);
    CHECK(gan::img::decode_file(dir.file("plain.png"), 0).pixels == im.pixels);
  }
  // Only the final files remain: no temporary files from the atomic writes.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) {
    CHECK(e.path().extension() == ".png");
    ++files;
  }
  CHECK(files == 3);
}

TEST_CASE("image: decoding converts channels and reports errors on one line", "[io][cpu]") {
  TempDir dir;
  const Image rgb = gradient(4, 5, 3);
  gan::img::write_png(dir.file("rgb.png"), rgb);
  const Image gray = gan::img::decode_file(dir.file("rgb.png"), 1);
  REQUIRE(gray.channels == 1);
  for (int i = 0; i < 20; ++i) {
    const uint8_t* p = rgb.pixels.data() + i * 3;
    CHECK(gray.pixels[i] == (19595u * p[0] + 38470u * p[1] + 7471u * p[2] + 32768u) >> 16);
  }
  const Image back = gan::img::to_rgb(gray);
  REQUIRE(back.channels == 3);
  CHECK(back.at(2, 3)[0] == gray.at(2, 3)[0]);
  CHECK(back.at(2, 3)[2] == gray.at(2, 3)[0]);
  CHECK(gan::img::to_channels(rgb, 3).pixels == rgb.pixels);

  // JPEG decodes to about the same values.
  const Image flat(16, 16, 3, 100);
  gan::img::write_jpeg(dir.file("flat.jpg"), flat, 95);
  const Image jpg = gan::img::decode_file(dir.file("flat.jpg"), 3);
  CHECK(jpg.height == 16);
  for (uint8_t v : jpg.pixels) CHECK(std::abs(int(v) - 100) <= 2);

  CHECK_THROWS_WITH(
      gan::img::decode_file(dir.file("missing.png")),
      "image: " + dir.file("missing.png") + ": cannot open (No such file or directory)");
  {
    FILE* f = std::fopen(dir.file("bad.png").c_str(), "wb");
    std::fputs("this is not an image", f);
    std::fclose(f);
  }
  CHECK_THROWS_WITH(
      gan::img::decode_file(dir.file("bad.png"), 3, "data"),
      Catch::Matchers::StartsWith("data: " + dir.file("bad.png") + ": cannot decode (") &&
          !Catch::Matchers::Contains("\n"));
  const uint8_t junk[4] = {1, 2, 3, 4};
  CHECK_THROWS_AS(gan::img::decode_memory(junk, 4), gan::Error);

  // Found by fuzz_image_folder: a JPEG Huffman table of 512 codes (stb 2.27 wrote past its
  // 256-entry tables; JPEGs now go through libjpeg-turbo). The same regression input the fuzz
  // script replays (fuzz/regressions/image_folder/), built here byte by byte.
  std::vector<uint8_t> dht = {0xFF, 0xD8, 0xFF, 0xC4, 0x02, 0x13, 0x00};
  for (int i = 0; i < 16; ++i) dht.push_back(32);
  for (int i = 0; i < 512; ++i) dht.push_back(uint8_t(i));
  dht.insert(dht.end(), {0xFF, 0xD9});
  REQUIRE(dht.size() == 537);  // 0x0213 = 531 = 2 + 1 + 16 + 512 segment bytes
  CHECK_THROWS_WITH(gan::img::decode_memory(dht.data(), dht.size(), 3, "x.jpg"),
                    "x.jpg: cannot decode (JPEG: Bogus Huffman table definition)");
  // Formats other than PNG and JPEG are refused (stb would have tried them).
  const uint8_t bmp[32] = {'B', 'M'};
  CHECK_THROWS_WITH(gan::img::decode_memory(bmp, sizeof bmp, 3, "x.bmp"),
                    "x.bmp: cannot decode (not a PNG or JPEG file)");
  // A valid JPEG's tables pass the check (stb's own encoder, above, and its decoding).
  const std::string flat_bytes = [&] {
    std::ifstream in(dir.file("flat.jpg"), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  CHECK(gan::img::decode_memory(reinterpret_cast<const uint8_t*>(flat_bytes.data()),
                                flat_bytes.size(), 3)
            .height == 16);
  CHECK_THROWS_WITH(gan::img::write_png("/nonexistent-dir/x.png", rgb),
                    Catch::Matchers::StartsWith("image: /nonexistent-dir/x.png: cannot write ("));
  CHECK_THROWS_WITH(gan::img::write_png_atomic("/nonexistent-dir/x.png", rgb),
                    Catch::Matchers::StartsWith("image: /nonexistent-dir/x.png: cannot write ("));
}

TEST_CASE("image: downscaling averages boxes and upscaling keeps constants", "[io][cpu]") {
  Image im(4, 4, 1);
  // 2x2 blocks with values 10, 20 / 30, 41 -> each block's mean.
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) {
      const int vals[4] = {10, 20, 30, 40};
      im.at(y, x)[0] = uint8_t(vals[(y / 2) * 2 + x / 2] + ((x + y) % 2));
    }
  const Image half = gan::img::resize(im, 2, 2);
  REQUIRE(half.height == 2);
  REQUIRE(half.width == 2);
  // Each 2x2 block holds v, v+1, v+1, v: mean v + 0.5, rounded to v or v + 1.
  CHECK(std::abs(half.pixels[0] - 10.5) <= 0.5);
  CHECK(std::abs(half.pixels[1] - 20.5) <= 0.5);
  CHECK(std::abs(half.pixels[2] - 30.5) <= 0.5);
  CHECK(std::abs(half.pixels[3] - 40.5) <= 0.5);

  const Image flat(5, 7, 3, 77);
  const Image up = gan::img::resize(flat, 20, 11);
  CHECK(up.width == 20);
  CHECK(up.height == 11);
  for (uint8_t v : up.pixels) CHECK(v == 77);
  // Mixed: shrink one axis, grow the other.
  const Image mixed = gan::img::resize(flat, 3, 9);
  for (uint8_t v : mixed.pixels) CHECK(v == 77);
  CHECK_THROWS_AS(gan::img::resize(flat, 0, 3), gan::Error);
}

TEST_CASE("image: pad crop and fit", "[io][cpu]") {
  const Image im = gradient(28, 28, 1);
  // Fashion-MNIST 28 -> 32 by padding: 2 px of background on each side, the image unchanged.
  const Image padded = gan::img::fit(im, 32, gan::img::Fit::Pad, 9);
  REQUIRE(padded.height == 32);
  REQUIRE(padded.width == 32);
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x) {
      const bool inside = y >= 2 && y < 30 && x >= 2 && x < 30;
      CHECK(padded.at(y, x)[0] == (inside ? im.at(y - 2, x - 2)[0] : 9));
    }
  // Odd margins put the extra pixel bottom/right: 3x2 in 4x5 -> top 0, left 1.
  const Image src3 = gradient(3, 2, 3);
  const Image odd = gan::img::pad(src3, 5, 4, 0);
  CHECK(odd.at(0, 0)[0] == 0);
  CHECK(odd.at(3, 1)[0] == 0);
  CHECK(odd.at(1, 4)[2] == 0);
  CHECK(std::equal(src3.at(0, 0), src3.at(0, 0) + 3, odd.at(0, 1)));
  CHECK(std::equal(src3.at(2, 1), src3.at(2, 1) + 3, odd.at(2, 2)));

  const Image wide = gradient(10, 20, 3);
  const Image sq = gan::img::pad_to_square(wide, 5);
  CHECK(sq.height == 20);
  CHECK(sq.width == 20);
  CHECK(sq.at(0, 0)[0] == 5);
  CHECK(std::equal(wide.at(0, 0), wide.at(0, 0) + 3, sq.at(5, 0)));
  const Image crop = gan::img::center_crop_square(wide);
  CHECK(crop.height == 10);
  CHECK(std::equal(wide.at(3, 5), wide.at(3, 5) + 3, crop.at(3, 0)));

  // A larger image padded: shrunk to fit (aspect kept), then centred.
  const Image big(40, 20, 1, 200);
  const Image fitted = gan::img::fit(big, 32, gan::img::Fit::Pad, 0);
  CHECK(fitted.height == 32);
  CHECK(fitted.at(16, 16)[0] == 200);  // inside the 32x16 centred band [8, 24)
  CHECK(fitted.at(16, 3)[0] == 0);
  CHECK(fitted.at(16, 28)[0] == 0);
  const Image cropped = gan::img::fit(big, 8, gan::img::Fit::Crop);
  CHECK(cropped.height == 8);
  CHECK(cropped.width == 8);
  const Image stretched = gan::img::fit(big, 16, gan::img::Fit::Resize);
  CHECK(stretched.height == 16);
  CHECK(stretched.width == 16);

  CHECK(gan::img::parse_fit("pad") == gan::img::Fit::Pad);
  CHECK(gan::img::parse_fit("crop") == gan::img::Fit::Crop);
  CHECK(std::string(gan::img::fit_name(gan::img::parse_fit("resize"))) == "resize");
  CHECK_THROWS_WITH(gan::img::parse_fit("zoom"),
                    "image: unknown fit mode 'zoom' (expected resize, pad or crop)");
  CHECK_THROWS_AS(gan::img::pad(wide, 10, 10), gan::Error);
}

TEST_CASE("image: make_grid follows the torchvision layout and value mapping", "[io][cpu]") {
  // 10 gray images of 3x4 in 8 columns -> 2 rows; padding 2.
  const int N = 10, H = 3, W = 4;
  std::vector<float> v(size_t(N) * H * W);
  for (size_t i = 0; i < v.size(); ++i) v[i] = -1.0f + 2.0f * float(i % 7) / 6.0f;
  v[0] = -3.0f;  // clamped to 0
  v[1] = 5.0f;   // clamped to 255
  v[2] = 0.0f;   // (0 + 1) / 2 * 255 + 0.5 -> 128
  const gan::Tensor t = gan::Tensor::from_vector(v, {N, H, W, 1});
  const Image g = gan::img::make_grid(t, 8, 2, 0);
  CHECK(g.channels == 3);
  CHECK(g.height == 2 * (H + 2) + 2);
  CHECK(g.width == 8 * (W + 2) + 2);
  CHECK(g.at(2, 2)[0] == 0);
  CHECK(g.at(2, 3)[1] == 255);
  CHECK(g.at(2, 4)[2] == 128);
  // Image 9 (row 1, col 1), pixel (1, 2).
  const float x = v[size_t(9) * H * W + 1 * W + 2];
  const uint8_t want = uint8_t(std::clamp((x + 1.0f) / 2.0f, 0.0f, 1.0f) * 255.0f + 0.5f);
  CHECK(g.at((H + 2) + 2 + 1, (W + 2) + 2 + 2)[0] == want);
  CHECK(g.at((H + 2) + 2 + 1, (W + 2) + 2 + 2)[2] == want);
  // Padding and the empty cells of the last row are background.
  CHECK(g.at(0, 0)[0] == 0);
  CHECK(g.at(1, 10)[1] == 0);
  CHECK(g.at(g.height - 3, g.width - 3)[2] == 0);

  // RGB keeps its channels; a single image with no padding is just that image.
  const gan::Tensor rgb =
      gan::Tensor::from_vector(std::vector<float>{-1, 0, 1, 1, 0, -1}, {1, 1, 2, 3});
  const Image one = gan::img::make_grid(rgb, 8, 0);
  REQUIRE(one.height == 1);
  REQUIRE(one.width == 2);
  CHECK(one.pixels == std::vector<uint8_t>{0, 128, 255, 255, 128, 0});
  CHECK(gan::img::tensor_image(rgb, 0).pixels == one.pixels);
  const Image gray_bg = gan::img::make_grid(rgb, 1, 1, 127);
  CHECK(gray_bg.at(0, 0)[0] == 127);

  CHECK_THROWS_AS(gan::img::make_grid(gan::Tensor::zeros({2, 3, 3, 2})), gan::Error);
  CHECK_THROWS_AS(gan::img::make_grid(gan::Tensor::zeros({3, 3})), gan::Error);
}

TEST_CASE("image: attention overlay colours by weight and marks the query", "[io][cpu]") {
  const Image base(8, 8, 1, 0);
  // 2x2 heat map over an 8x8 image: each cell covers 4x4 pixels.
  const std::vector<float> heat = {0.0f, 2.0f, 0.5f, 1.0f};
  const Image o = gan::img::overlay_heatmap(base, heat, 2, 2, -1, -1, 1.0f);
  REQUIRE(o.channels == 3);
  uint8_t c[3];
  gan::img::colormap_jet(1.0f, c);  // the peak: dark red
  CHECK(c[0] > 100);
  CHECK(c[2] == 0);
  CHECK(std::equal(c, c + 3, o.at(1, 6)));
  gan::img::colormap_jet(0.0f, c);  // zero: dark blue
  CHECK(c[2] > 100);
  CHECK(c[0] == 0);
  CHECK(std::equal(c, c + 3, o.at(1, 1)));
  gan::img::colormap_jet(0.5f, c);
  CHECK(std::equal(c, c + 3, o.at(7, 7)));

  // Half blend, with the query cell (1, 0) outlined: white on the cell border, black outside it.
  const Image m = gan::img::overlay_heatmap(Image(8, 8, 3, 200), heat, 2, 2, 1, 0, 0.5f);
  CHECK(m.at(4, 0)[0] == 255);
  CHECK(m.at(7, 3)[1] == 255);
  CHECK(m.at(3, 1)[2] == 0);        // the black ring above the cell
  CHECK(m.at(5, 4)[0] == 0);        // the black ring right of the cell
  gan::img::colormap_jet(0.5f, c);  // (5, 5): heat 1.0 of peak 2.0, half blended over 200
  CHECK(m.at(5, 5)[0] == uint8_t(0.5f * 200 + 0.5f * c[0] + 0.5f));
  CHECK_THROWS_AS(gan::img::overlay_heatmap(base, heat, 3, 2), gan::Error);
  CHECK_THROWS_AS(gan::img::overlay_heatmap(base, heat, 2, 2, 2, 0), gan::Error);
}
