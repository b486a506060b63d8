// Spec strings and declared parameters: parsing, canonical form, typed values, ranges and error messages.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "test_util.h"
#include "xdrec/params.h"

using namespace xdrec;

namespace {

using xdrec::testing_util::throws_error;

// A component with one parameter of each kind.
struct Params {
  int factors = 0;
  double reg = 0;
  bool bias = false;
  std::string solver;
  ParamSet set{"toy"};
  Params() {
    set.add("factors", &factors, 64, 1, 1024, "latent factors")
        .add("reg", &reg, 0.01, 0.0, 10.0, "regularisation")
        .add("bias", &bias, true, "learn a bias")
        .add("solver", &solver, "cg", {"cg", "cholesky"}, "row solver");
  }
};

}  // namespace

TEST(Spec, ParsesNameOnly) {
  Spec s = Spec::parse("ials");
  EXPECT_EQ(s.name, "ials");
  EXPECT_TRUE(s.values.empty());
  EXPECT_EQ(s.str(), "ials");
  EXPECT_TRUE(Spec::parse("ials:").values.empty());
}

TEST(Spec, ParsesKeyValuesTrimmingSpaces) {
  Spec s = Spec::parse(" ials : reg = 0.05 , factors=128,, ");
  EXPECT_EQ(s.name, "ials");
  ASSERT_EQ(s.values.size(), 2u);
  EXPECT_EQ(s.values.at("factors"), "128");
  EXPECT_EQ(s.values.at("reg"), "0.05");
  EXPECT_EQ(s.str(), "ials:factors=128,reg=0.05");  // keys sorted
  EXPECT_EQ(Spec::parse(s.str()).str(), s.str());
}

TEST(Spec, ValueMayContainColonsAndSlashes) {
  Spec s = Spec::parse("bert:path=/models/a:b");
  EXPECT_EQ(s.name, "bert");
  EXPECT_EQ(s.values.at("path"), "/models/a:b");
}

TEST(Spec, RejectsMalformedText) {
  EXPECT_TRUE(throws_error([] { Spec::parse(""); }, {"missing a name"}));
  EXPECT_TRUE(throws_error([] { Spec::parse(":a=1"); }, {"missing a name"}));
  EXPECT_TRUE(throws_error([] { Spec::parse("m:a"); }, {"expected key=value", "'a'"}));
  EXPECT_TRUE(throws_error([] { Spec::parse("m:=3"); }, {"expected key=value"}));
  EXPECT_TRUE(throws_error([] { Spec::parse("m:a=1,a=2"); }, {"'a' given twice"}));
}

TEST(ParamSet, DefaultsAreAppliedOnDeclaration) {
  Params p;
  EXPECT_EQ(p.factors, 64);
  EXPECT_DOUBLE_EQ(p.reg, 0.01);
  EXPECT_TRUE(p.bias);
  EXPECT_EQ(p.solver, "cg");
  EXPECT_EQ(p.set.current(), "bias=true,factors=64,reg=0.01,solver=cg");
}

TEST(ParamSet, AppliesTypedValues) {
  Params p;
  p.set.apply(Spec::parse("toy:factors=1024,reg=0,bias=no,solver=cholesky").values);
  EXPECT_EQ(p.factors, 1024);
  EXPECT_EQ(p.reg, 0.0);
  EXPECT_FALSE(p.bias);
  EXPECT_EQ(p.solver, "cholesky");
  EXPECT_EQ(p.set.current(), "bias=false,factors=1024,reg=0,solver=cholesky");
  for (const char* t : {"true", "1", "yes"}) {
    p.set.apply({{"bias", t}});
    EXPECT_TRUE(p.bias) << t;
  }
  for (const char* f : {"false", "0", "no"}) {
    p.set.apply({{"bias", f}});
    EXPECT_FALSE(p.bias) << f;
  }
  p.set.apply({{"reg", "2.5e-1"}});
  EXPECT_DOUBLE_EQ(p.reg, 0.25);
  p.set.apply({{"factors", "1"}});  // the lower bound is inclusive
  EXPECT_EQ(p.factors, 1);
}

TEST(ParamSet, CurrentRoundTripsThroughApply) {
  Params a, b;
  a.set.apply({{"factors", "17"}, {"reg", "0.125"}, {"bias", "false"}, {"solver", "cholesky"}});
  b.set.apply(Spec::parse("toy:" + a.set.current()).values);
  EXPECT_EQ(b.set.current(), a.set.current());
  EXPECT_EQ(b.factors, 17);
  EXPECT_EQ(b.reg, 0.125);
}

TEST(ParamSet, UnknownKeyNamesOwnerAndKnownKeys) {
  Params p;
  EXPECT_TRUE(throws_error(
      [&] {
        p.set.apply({{"factor", "3"}});
      },
      {"toy", "unknown parameter 'factor'", "factors", "reg", "bias", "solver"}));
}

TEST(ParamSet, RejectsBadIntegers) {
  Params p;
  for (const char* v : {"abc", "", "1.5", "12x", "1e3", "0x10"})
    EXPECT_TRUE(throws_error([&] { p.set.apply({{"factors", v}}); }, {"toy", "'factors'", "integer"})) << v;
  EXPECT_TRUE(throws_error(
      [&] {
        p.set.apply({{"factors", "0"}});
      },
      {"'factors'", "out of range [1, 1024]"}));
  EXPECT_TRUE(throws_error([&] { p.set.apply({{"factors", "1025"}}); }, {"out of range"}));
  EXPECT_TRUE(throws_error([&] { p.set.apply({{"factors", "99999999999999999999"}}); }, {"'factors'"}));
  EXPECT_EQ(p.factors, 64) << "a rejected value leaves the field unchanged";
}

TEST(ParamSet, RejectsBadNumbers) {
  Params p;
  for (const char* v : {"abc", "", "0.1.2", "inf", "nan", "1e999"})
    EXPECT_TRUE(throws_error([&] { p.set.apply({{"reg", v}}); }, {"'reg'", "number"})) << v;
  EXPECT_TRUE(throws_error([&] { p.set.apply({{"reg", "-0.001"}}); }, {"'reg'", "out of range [0, 10]"}));
  EXPECT_TRUE(throws_error([&] { p.set.apply({{"reg", "10.5"}}); }, {"out of range"}));
  EXPECT_DOUBLE_EQ(p.reg, 0.01);
}

TEST(ParamSet, RejectsBadBoolsAndChoices) {
  Params p;
  EXPECT_TRUE(throws_error([&] { p.set.apply({{"bias", "maybe"}}); }, {"'bias'", "true or false", "maybe"}));
  EXPECT_TRUE(throws_error([&] { p.set.apply({{"solver", "lu"}}); }, {"'solver'", "'lu'", "cg, cholesky"}));
}

TEST(ParamSet, FreeStringAcceptsAnyText) {
  std::string path;
  ParamSet s("enc");
  s.add("path", &path, "", {}, "model directory");
  s.apply({{"path", "/a/b c"}});
  EXPECT_EQ(path, "/a/b c");
  EXPECT_EQ(s.current(), "path=/a/b c");
}

TEST(ParamSet, HelpDocumentsEveryParameter) {
  Params p;
  const std::string h = p.set.help();
  EXPECT_NE(h.find("factors (int, default 64, range [1, 1024]): latent factors"), std::string::npos) << h;
  EXPECT_NE(h.find("reg (number, default 0.01, range [0, 10]): regularisation"), std::string::npos) << h;
  EXPECT_NE(h.find("bias (bool, default true): learn a bias"), std::string::npos) << h;
  EXPECT_NE(h.find("solver (string, default 'cg', one of cg cholesky): row solver"), std::string::npos) << h;
  EXPECT_EQ(std::count(h.begin(), h.end(), '\n'), 4);
}

TEST(ParamSet, WideIntegerRange) {
  int seed = 0;
  ParamSet s("m");
  s.add("seed", &seed, 0, 0, INT_MAX, "seed");
  s.apply({{"seed", "2147483647"}});
  EXPECT_EQ(seed, INT_MAX);
  EXPECT_TRUE(throws_error([&] { s.apply({{"seed", "2147483648"}}); }, {"out of range"}));
  EXPECT_TRUE(throws_error([&] { s.apply({{"seed", "-1"}}); }, {"out of range"}));
}
