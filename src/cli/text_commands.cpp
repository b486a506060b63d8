// xdrec encode / xdrec embed.
#include "cli/commands.h"

namespace xdrec::cli {

int cmd_encode(const EncodeArgs& a, const Common& c) {
  (void)a;
  (void)c;
  throw Error("encode: not available yet");
}

int cmd_embed(const EmbedArgs& a, const Common& c) {
  (void)a;
  (void)c;
  throw Error("embed: not available yet");
}

}  // namespace xdrec::cli
