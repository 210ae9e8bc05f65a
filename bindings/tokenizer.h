#pragma once
// The tokenizer userdata, for the bindings that take one (loaders, pretraining corpora and maskers).
#include "toolkit.h"

namespace ts::text {
class Tokenizer;
}

namespace ts::lua {

TWOSTAGE_LUA_TYPE(text::Tokenizer, "twostage.Tokenizer");

}  // namespace ts::lua
