// SHA-256 against the FIPS 180-4 / NIST test vectors, including inputs that straddle the
// 55/56/64-byte padding boundaries and data fed in uneven pieces.
#include "core/sha256.h"

#include <string>

#include "test_util.h"

using namespace lrq;

TEST(Sha256, NistVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(
      sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklm"
                 "nopqklmnopqrlmnopqrsmnopqrstnopqrstu"),
      "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, PiecewiseEqualsOneShot) {
  std::string data;
  for (int i = 0; i < 300; ++i) data += char(i * 37 + 11);
  for (size_t len : {55u, 56u, 63u, 64u, 65u, 119u, 120u, 300u}) {
    const std::string want = sha256_hex(std::string_view(data).substr(0, len));
    Sha256 h;
    for (size_t at = 0, step = 1; at < len; at += step, step = step % 7 + 1)
      h.update(data.data() + at, std::min(step, len - at));
    EXPECT_EQ(h.hex_digest(), want) << len;
  }
}
