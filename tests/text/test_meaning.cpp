// Meaning, checked with the real pretrained use-lite model: paraphrases of products, books and films find
// each other, and related items are closer than unrelated ones.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "xdrec/encoder.h"

using namespace xdrec;

namespace {

std::unique_ptr<TextEncoder> load_use_lite() {
  try {
    return create_encoder("use-lite");
  } catch (const Error& e) {
    return nullptr;
  }
}

float cosine(const float* a, const float* b, size_t d) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < d; ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return static_cast<float>(ab / std::sqrt(aa * bb + 1e-30));
}

// Each pair says the same thing in different words.
const std::vector<std::pair<std::string, std::string>> kPairs = {
    {"Stainless steel chef's knife, 8 inch", "Eight-inch kitchen knife made of stainless steel"},
    {"Non-stick frying pan with glass lid", "Skillet with a nonstick coating and a see-through cover"},
    {"Organic green tea, 100 tea bags", "A box of one hundred bags of organic green tea"},
    {"Dark chocolate bar with sea salt", "Salted bittersweet chocolate"},
    {"Electric kettle that boils water fast", "Quick-boiling electric water heater jug"},
    {"Ground coffee beans, medium roast", "Medium roast coffee, ground"},
    {"Gluten-free pasta made from brown rice", "Brown rice noodles without gluten"},
    {"A detective investigates a murder in Victorian London",
     "In nineteenth-century London, an inspector solves a killing"},
    {"A young wizard attends a school of magic",
     "A boy learns sorcery at a boarding school for witches and wizards"},
    {"A cookbook of quick vegetarian dinners", "Recipes for fast meat-free evening meals"},
    {"The history of the Roman Empire", "How ancient Rome rose and fell"},
    {"A guide to growing vegetables in your garden", "How to grow your own vegetables at home"},
    {"Astronauts stranded on Mars try to survive",
     "A space crew stuck on the red planet fights to stay alive"},
    {"A romantic comedy about two rivals who fall in love", "A funny love story between former enemies"},
    {"A documentary about penguins in Antarctica", "Film about the life of penguins at the South Pole"},
    {"A horror movie set in a haunted house", "A scary film about a house full of ghosts"},
    {"Animated film about toys that come to life", "Cartoon movie where toys are alive"},
    {"A war film about soldiers on the beaches of Normandy", "A movie about the D-Day landings in France"},
    {"Wireless noise-cancelling headphones", "Bluetooth headphones that block out noise"},
    {"A biography of a famous physicist", "The life story of a well-known scientist who studied physics"},
};

}  // namespace

TEST(UseLiteMeaning, ParaphrasesAreNearestNeighbours) {
  auto enc = load_use_lite();
  if (!enc) GTEST_SKIP() << "use-lite is not installed (run scripts/fetch-models)";
  std::vector<std::string> texts;
  for (auto& [a, b] : kPairs) {
    texts.push_back(a);
    texts.push_back(b);
  }
  Matrix v = enc->encode(texts, 2);
  ASSERT_EQ(v.rows, texts.size());
  size_t hits = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    size_t best = i;
    float best_sim = -2;
    for (size_t j = 0; j < texts.size(); ++j) {
      if (j == i) continue;
      const float s = cosine(v.row(i), v.row(j), v.cols);
      if (s > best_sim) {
        best_sim = s;
        best = j;
      }
    }
    const size_t partner = i ^ 1;
    if (best == partner) {
      ++hits;
    } else {
      std::printf("nearest to '%s' is '%s', not its partner\n", texts[i].c_str(), texts[best].c_str());
    }
  }
  std::printf("paraphrase nearest-neighbour hits: %zu / %zu\n", hits, texts.size());
  EXPECT_GE(hits * 10, texts.size() * 9)
      << "fewer than 9 in 10 texts have their paraphrase as nearest neighbour";
}

TEST(UseLiteMeaning, RelatedItemsAreCloserThanUnrelated) {
  auto enc = load_use_lite();
  if (!enc) GTEST_SKIP() << "use-lite is not installed (run scripts/fetch-models)";
  // (anchor, related, unrelated) triples across domains.
  const std::vector<std::array<std::string, 3>> triples = {
      {"Cast iron skillet", "Carbon steel wok", "Paperback mystery novel"},
      {"Espresso machine", "Coffee grinder", "Science fiction film"},
      {"Fantasy novel with dragons", "Epic tale of knights and magic", "Stainless steel saucepan"},
      {"Space exploration documentary", "Film about astronauts", "Organic honey"},
      {"Vegan protein bars", "Plant-based snack", "Thriller about a bank robbery"},
      {"Children's picture book about animals", "Illustrated story for kids about a zoo", "Chef's knife set"},
  };
  for (auto& t : triples) {
    std::vector<std::string> texts{t[0], t[1], t[2]};
    Matrix v = enc->encode(texts, 1);
    const float related = cosine(v.row(0), v.row(1), v.cols);
    const float unrelated = cosine(v.row(0), v.row(2), v.cols);
    EXPECT_GT(related, unrelated) << t[0] << " / " << t[1] << " vs " << t[2];
  }
}
