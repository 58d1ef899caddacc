// The source tree this program was built from (where the committed classifier weights are found
// when no other copy is): the only file compiled with the tree's absolute path.
namespace gan::eval {
const char* source_dir() { return GAN_SOURCE_DIR; }
}  // namespace gan::eval
