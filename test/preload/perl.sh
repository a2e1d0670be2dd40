# perl.sh: perl fills a hash of 500,000 keys, sorts its keys and its values
# and prints digests; the output must match a plain run.
. "$(dirname "$0")/common.sh"
need_prog perl
check_preload
perl -MDigest::MD5 -e 1 2>/dev/null || skip "perl's Digest::MD5 is missing"

cat >"$TMP/sort.pl" <<'PL'
use strict;
use warnings;
use Digest::MD5 qw(md5_hex);

my %h;
my $x = 12345;
for my $i (1 .. 500000) {
    $x = ($x * 69069 + 1) % 4294967296;
    my $k = sprintf("k%08x-%d", $x, $i % 97);
    $h{$k} = $x % 1000003 . "/" . ("v" x ($i % 23));
}
my $by_key = Digest::MD5->new;
$by_key->add("$_=$h{$_}\n") for sort keys %h;
my @nums = sort { $a <=> $b } map { (split m{/}, $h{$_})[0] } keys %h;
# Drop half and rebuild, to recycle the memory.
delete @h{ grep { /[02468]$/ } keys %h };
my $left = scalar keys %h;
my @big = map { [ $_, "x" x ($_ % 50) ] } 1 .. 200000;
print "keys 500000, left $left\n";
print "by key   ", $by_key->hexdigest, "\n";
print "numbers  ", md5_hex(join(",", @nums)), "\n";
print "arrays   ", scalar(@big), " ", md5_hex(join("", map { $_->[1] } @big[0 .. 999])), "\n";
PL

export PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0
run_both perl perl "$TMP/sort.pl"
cat "$TMP/perl.carve"
pass
