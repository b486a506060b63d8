// Seeded synthetic multi-domain data. Each item belongs to one topic (its category) and gets an English title
// from that topic's words; each user has a taste concentrated on a few topics, shared by every domain the
// user is active in, so co-occurrence (and cross-domain transfer) carries real signal.

#include "xdrec/synthetic.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace xdrec {

namespace {

struct Topic {
  const char* name;
  const char* nouns[10];
  const char* adjectives[6];
};

// clang-format off
const Topic kTopics[] = {
  {"gardening", {"Garden", "Roses", "Soil", "Seeds", "Orchard", "Tulips", "Greenhouse", "Hedge", "Blossom", "Meadow"}, {"Quiet", "Blooming", "Green", "Wild", "Hidden", "Fragrant"}},
  {"cooking", {"Kitchen", "Recipe", "Spices", "Bread", "Feast", "Oven", "Soup", "Herbs", "Pasta", "Supper"}, {"Savory", "Golden", "Rustic", "Hearty", "Sweet", "Simple"}},
  {"travel", {"Journey", "Road", "Passport", "Harbor", "Island", "Map", "Voyage", "Train", "Compass", "Horizon"}, {"Distant", "Endless", "Open", "Wandering", "Northern", "Sunlit"}},
  {"science", {"Atom", "Galaxy", "Theory", "Laboratory", "Quantum", "Molecule", "Telescope", "Equation", "Comet", "Orbit"}, {"Curious", "Infinite", "Invisible", "Brilliant", "Cosmic", "Electric"}},
  {"history", {"Empire", "Kingdom", "Castle", "Crown", "Battle", "Dynasty", "Chronicle", "Ruins", "Throne", "Legacy"}, {"Ancient", "Forgotten", "Royal", "Lost", "Medieval", "Noble"}},
  {"mystery", {"Detective", "Secret", "Clue", "Shadow", "Alibi", "Murder", "Cipher", "Witness", "Riddle", "Suspect"}, {"Dark", "Silent", "Missing", "Strange", "Midnight", "Hidden"}},
  {"romance", {"Heart", "Kiss", "Love", "Promise", "Wedding", "Letter", "Rose", "Summer", "Dance", "Embrace"}, {"Tender", "Sweet", "Secret", "Endless", "Golden", "Gentle"}},
  {"sports", {"Champion", "Goal", "Stadium", "Team", "Victory", "Marathon", "Ball", "Season", "Coach", "League"}, {"Fast", "Winning", "Bold", "Mighty", "Final", "Fearless"}},
  {"music", {"Song", "Melody", "Guitar", "Symphony", "Rhythm", "Piano", "Chorus", "Ballad", "Drum", "Concert"}, {"Soulful", "Electric", "Quiet", "Golden", "Wild", "Blue"}},
  {"fantasy", {"Dragon", "Wizard", "Sword", "Spell", "Realm", "Elf", "Quest", "Crystal", "Prophecy", "Tower"}, {"Enchanted", "Mystic", "Ancient", "Shadowed", "Magic", "Eternal"}},
  {"technology", {"Robot", "Circuit", "Code", "Network", "Machine", "Algorithm", "Signal", "Chip", "Server", "Drone"}, {"Digital", "Smart", "Wireless", "Neural", "Virtual", "Rapid"}},
  {"nature", {"Forest", "River", "Mountain", "Wolf", "Ocean", "Valley", "Eagle", "Storm", "Glacier", "Canyon"}, {"Wild", "Silent", "Frozen", "Vast", "Green", "Rugged"}},
  {"art", {"Canvas", "Painter", "Gallery", "Portrait", "Sculpture", "Color", "Sketch", "Museum", "Brush", "Mural"}, {"Vivid", "Abstract", "Bold", "Modern", "Bright", "Classic"}},
  {"health", {"Yoga", "Fitness", "Balance", "Breath", "Wellness", "Sleep", "Muscle", "Energy", "Diet", "Mind"}, {"Healthy", "Calm", "Strong", "Mindful", "Active", "Fresh"}},
  {"business", {"Market", "Startup", "Profit", "Leader", "Strategy", "Deal", "Brand", "Office", "Investor", "Venture"}, {"Smart", "Lean", "Global", "Bold", "Rising", "Modern"}},
  {"comedy", {"Joke", "Clown", "Prank", "Laugh", "Party", "Blunder", "Circus", "Mischief", "Giggle", "Caper"}, {"Silly", "Crazy", "Funny", "Wacky", "Merry", "Clumsy"}},
  {"horror", {"Ghost", "Curse", "Haunting", "Crypt", "Zombie", "Nightmare", "Vampire", "Scream", "Graveyard", "Witch"}, {"Cursed", "Haunted", "Bloody", "Eerie", "Dead", "Grim"}},
  {"children", {"Puppy", "Bunny", "Teddy", "Playground", "Rainbow", "Balloon", "Pirate", "Kitten", "Sandcastle", "Treasure"}, {"Little", "Happy", "Brave", "Tiny", "Jolly", "Sleepy"}},
  {"war", {"Soldier", "Battlefield", "Front", "Tank", "General", "Trench", "Siege", "Regiment", "Mission", "Flag"}, {"Brave", "Last", "Fallen", "Iron", "Bitter", "Heroic"}},
  {"philosophy", {"Truth", "Reason", "Virtue", "Soul", "Wisdom", "Ethics", "Idea", "Logic", "Freedom", "Being"}, {"Pure", "Eternal", "Human", "Moral", "Deep", "Practical"}},
  {"fashion", {"Dress", "Style", "Runway", "Silk", "Jacket", "Boutique", "Model", "Velvet", "Collection", "Trend"}, {"Elegant", "Chic", "Classic", "Stylish", "Daring", "Luxe"}},
  {"coffee", {"Espresso", "Bean", "Roast", "Latte", "Brew", "Mug", "Grinder", "Cafe", "Aroma", "Crema"}, {"Dark", "Rich", "Smooth", "Strong", "Fresh", "Morning"}},
  {"baking", {"Cake", "Cookie", "Pastry", "Dough", "Muffin", "Pie", "Flour", "Icing", "Loaf", "Tart"}, {"Sweet", "Warm", "Fluffy", "Buttery", "Golden", "Homemade"}},
  {"cars", {"Engine", "Wheel", "Motor", "Garage", "Highway", "Racer", "Turbo", "Piston", "Coupe", "Speedway"}, {"Fast", "Classic", "Roaring", "Sleek", "Supercharged", "Vintage"}},
};
// clang-format on
constexpr size_t kNumTopics = sizeof(kTopics) / sizeof(kTopics[0]);

const Topic& topic_of(uint32_t t) {
  return kTopics[t % kNumTopics];
}

std::string topic_name(uint32_t t) {
  std::string n = topic_of(t).name;
  if (t >= kNumTopics) n += " " + std::to_string(t / kNumTopics + 1);  // more topics than word lists
  return n;
}

std::string make_title(Rng& rng, const Topic& a, const Topic& b) {
  const char* adj = a.adjectives[rng.below(6)];
  const size_t k1 = rng.below(10);
  size_t k2 = rng.below(10);
  if (&a == &b && k2 == k1) k2 = (k1 + 1) % 10;
  const char* n1 = a.nouns[k1];
  const char* n2 = b.nouns[k2];
  switch (rng.below(6)) {
    case 0:
      return std::string("The ") + adj + " " + n1 + " of " + n2;
    case 1:
      return std::string("The ") + adj + " " + n1;
    case 2:
      return std::string(n1) + " and " + n2;
    case 3:
      return std::string("A ") + adj + " " + n1;
    case 4:
      return std::string(adj) + " " + n1 + ": " + n2 + " Stories";
    default:
      return std::string("The ") + n1 + " of the " + adj + " " + n2;
  }
}

// Discrete sampler by inverse cumulative weights (small supports).
struct Cdf {
  std::vector<double> c;
  void set(const std::vector<double>& w) {
    c.resize(w.size());
    double s = 0;
    for (size_t k = 0; k < w.size(); ++k) c[k] = (s += w[k]);
  }
  size_t sample(Rng& rng) const {
    const double x = rng.uniform() * c.back();
    const size_t k = std::upper_bound(c.begin(), c.end(), x) - c.begin();
    return std::min(k, c.size() - 1);
  }
};

}  // namespace

Dataset make_synthetic(const SyntheticOptions& opt) {
  check(opt.n_users >= 1, "synthetic: n_users must be at least 1");
  check(!opt.domains.empty(), "synthetic: at least one domain is needed");
  check(opt.domains.size() < 65535, "synthetic: too many domains");
  check(opt.items_per_domain >= 1, "synthetic: items_per_domain must be at least 1");
  check(opt.n_topics >= 1 && opt.n_topics <= 100000, "synthetic: n_topics must be in [1, 100000]");
  check(opt.mean_interactions > 0 && std::isfinite(opt.mean_interactions),
        "synthetic: mean_interactions must be positive");
  check(opt.overlap >= 0 && opt.overlap <= 1, "synthetic: overlap must be in [0, 1]");
  check(opt.popularity_skew >= 0 && std::isfinite(opt.popularity_skew),
        "synthetic: popularity_skew must be non-negative");
  {
    std::set<std::string> seen;
    for (const auto& d : opt.domains) {
      check(!d.empty(), "synthetic: empty domain name");
      check(seen.insert(d).second, "synthetic: duplicate domain '" + d + "'");
    }
  }
  check(static_cast<uint64_t>(opt.items_per_domain) * opt.domains.size() < 0xFFFFFFFFull,
        "synthetic: too many items");

  const uint32_t n_dom = static_cast<uint32_t>(opt.domains.size());
  const uint32_t n_topics = opt.n_topics;
  const uint32_t ipd = opt.items_per_domain;
  Dataset ds;
  ds.name = "synthetic";
  for (const auto& d : opt.domains) ds.domains.get_or_add(d);

  // Items: topic, title, categories; per (domain, topic) a Zipf-like popularity order.
  const size_t n_items = size_t(n_dom) * ipd;
  ds.items.reserve(n_items);
  ds.item_domain.resize(n_items);
  ds.item_text.resize(n_items);
  std::vector<uint32_t> item_topic(n_items);
  std::vector<std::vector<uint32_t>> members(size_t(n_dom) * n_topics);  // items of (domain, topic), by rank
  std::vector<Cdf> member_cdf(size_t(n_dom) * n_topics);
  for (uint32_t d = 0; d < n_dom; ++d) {
    Rng rng(opt.seed, 0x49000000ull + d);
    for (uint32_t j = 0; j < ipd; ++j) {
      const uint32_t i = d * ipd + j;
      ds.items.get_or_add(opt.domains[d] + ":" + std::to_string(j));
      ds.item_domain[i] = static_cast<uint16_t>(d);
      // Every topic gets items when there are enough; the rest are spread at random.
      const uint32_t t = j < n_topics ? j : static_cast<uint32_t>(rng.below(n_topics));
      item_topic[i] = t;
      members[size_t(d) * n_topics + t].push_back(i);
      const bool second = n_topics > 1 && rng.uniform() < 0.3;
      uint32_t t2 = t;
      if (second) {
        t2 = static_cast<uint32_t>(rng.below(n_topics - 1));
        if (t2 >= t) ++t2;
      }
      ItemText& text = ds.item_text[i];
      text.title = make_title(rng, topic_of(t), topic_of(second ? t2 : t));
      text.categories.push_back(topic_name(t));
      if (second) text.categories.push_back(topic_name(t2));
      text.description = "A " + opt.domains[d] + " pick about " + topic_name(t) +
                         (second ? " and " + topic_name(t2) : std::string()) + ".";
    }
  }
  for (size_t k = 0; k < members.size(); ++k) {
    std::vector<double> w(members[k].size());
    for (size_t r = 0; r < w.size(); ++r) w[r] = std::pow(double(r + 1), -opt.popularity_skew);
    if (!w.empty()) member_cdf[k].set(w);
  }
  // Topics are mildly unequal in how many users favour them.
  Cdf topic_pop;
  {
    std::vector<double> w(n_topics);
    for (uint32_t t = 0; t < n_topics; ++t) w[t] = std::pow(double(t + 1), -0.3);
    topic_pop.set(w);
  }

  // Users: generated in chunks (in parallel when threads > 1); user u draws only from Rng(seed, u), so the
  // result does not depend on the thread count.
  const uint32_t cap = std::max<uint32_t>(1, ipd / 2);
  const uint32_t n_users = opt.n_users;
  constexpr size_t kChunk = 4096;
  const size_t n_chunks = (size_t(n_users) + kChunk - 1) / kChunk;
  std::vector<std::vector<Interaction>> chunk_out(n_chunks);
  ds.user_profile.resize(n_users);
  parallel_for(n_chunks, opt.threads, 1, [&](size_t c_begin, size_t c_end) {
    std::vector<double> taste(n_topics), fw;
    std::vector<uint32_t> favourites, order, active;
    std::vector<uint32_t> mark(n_items, 0);
    std::vector<std::pair<uint32_t, float>> picks;  // (item, rating) of one user, all domains
    Cdf taste_cdf;
    for (size_t c = c_begin; c < c_end; ++c) {
      std::vector<Interaction>& out = chunk_out[c];
      out.reserve(static_cast<size_t>(kChunk * opt.mean_interactions * (1.0 + opt.overlap)));
      const uint32_t u_end = static_cast<uint32_t>(std::min<size_t>(n_users, (c + 1) * kChunk));
      for (uint32_t u = static_cast<uint32_t>(c * kChunk); u < u_end; ++u) {
        Rng rng(opt.seed, u);
        // Taste: 1-3 favourite topics holding 85% of the mass, the rest spread evenly.
        const uint32_t k_fav = std::min<uint32_t>(n_topics, 1 + static_cast<uint32_t>(rng.below(3)));
        favourites.clear();
        while (favourites.size() < k_fav) {
          const uint32_t t = static_cast<uint32_t>(topic_pop.sample(rng));
          if (std::find(favourites.begin(), favourites.end(), t) == favourites.end()) favourites.push_back(t);
        }
        fw.resize(k_fav);
        double fsum = 0;
        for (auto& w : fw) fsum += (w = -std::log(1.0 - rng.uniform()) + 0.05);
        std::fill(taste.begin(), taste.end(), 0.15 / n_topics);
        for (uint32_t f = 0; f < k_fav; ++f) taste[favourites[f]] += 0.85 * fw[f] / fsum;
        taste_cdf.set(taste);
        const double tmax = *std::max_element(taste.begin(), taste.end());

        // Profile text from the favourite topics, strongest first.
        order.resize(k_fav);
        for (uint32_t f = 0; f < k_fav; ++f) order[f] = f;
        std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return fw[a] > fw[b]; });
        std::string text = "enjoys ";
        for (uint32_t r = 0; r < k_fav; ++r) {
          if (r > 0) text += r + 1 == k_fav ? " and " : ", ";
          text += topic_name(favourites[order[r]]);
        }
        ds.user_profile[u].text = std::move(text);

        // Active domains: one, or with probability `overlap` between two and all of them.
        uint32_t n_active = 1;
        if (n_dom > 1 && rng.uniform() < opt.overlap)
          n_active = 2 + static_cast<uint32_t>(rng.below(n_dom - 1));
        active.resize(n_dom);
        for (uint32_t d = 0; d < n_dom; ++d) active[d] = d;
        for (uint32_t k = 0; k < n_active; ++k) std::swap(active[k], active[k + rng.below(n_dom - k)]);
        active.resize(n_active);

        picks.clear();
        const uint32_t stamp = u + 1;
        for (uint32_t d : active) {
          const double g =
              (-std::log(1.0 - rng.uniform()) - std::log(1.0 - rng.uniform())) / 2.0;  // Gamma(2)/2
          const uint32_t n =
              std::clamp<uint32_t>(static_cast<uint32_t>(std::lround(opt.mean_interactions * g)), 1, cap);
          uint32_t got = 0;
          for (uint32_t attempt = 0; got < n && attempt < 20 * n + 20; ++attempt) {
            const uint32_t t = static_cast<uint32_t>(taste_cdf.sample(rng));
            const size_t cell = size_t(d) * n_topics + t;
            uint32_t item;
            if (members[cell].empty())
              item = d * ipd + static_cast<uint32_t>(rng.below(ipd));
            else
              item = members[cell][member_cdf[cell].sample(rng)];
            if (mark[item] == stamp) continue;
            mark[item] = stamp;
            const double aff = taste[item_topic[item]] / tmax;
            const double r = 1.5 + 3.0 * aff + 0.8 * rng.normal();
            picks.emplace_back(item, static_cast<float>(std::clamp(std::round(r), 1.0, 5.0)));
            ++got;
          }
        }
        // Interleave the domains in time: a seeded shuffle, then increasing timestamps.
        for (size_t k = picks.size(); k > 1; --k) std::swap(picks[k - 1], picks[rng.below(k)]);
        int64_t ts = 1500000000 + static_cast<int64_t>(rng.below(86400 * 365));
        for (const auto& [item, rating] : picks) {
          ts += 60 + static_cast<int64_t>(rng.below(86400 * 3));
          out.push_back(Interaction{u, item, rating, ts});
        }
      }
    }
  });
  ds.users.reserve(n_users);
  for (uint32_t u = 0; u < n_users; ++u) ds.users.get_or_add("u" + std::to_string(u));
  size_t total = 0;
  for (const auto& c : chunk_out) total += c.size();
  ds.interactions.reserve(total);
  for (auto& c : chunk_out) {
    ds.interactions.insert(ds.interactions.end(), c.begin(), c.end());
    std::vector<Interaction>().swap(c);
  }
  return ds;
}

void thin_domain(Dataset& ds, const std::string& domain, double keep, uint64_t seed) {
  const auto d = ds.domains.find(domain);
  check(d.has_value(), "thin_domain: no domain '" + domain + "'");
  Rng rng(seed);
  std::vector<Interaction> kept;
  for (const auto& e : ds.interactions)
    if (ds.item_domain[e.item] != *d || rng.uniform() < keep) kept.push_back(e);
  ds.interactions = std::move(kept);
}

}  // namespace xdrec
