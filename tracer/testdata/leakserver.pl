# A Perl server that never closes what it accepts: the script counterpart
# of leakserver.c. Prints "listening ADDR", then "accepted FD LOCAL REMOTE".
use strict;
use warnings;
use IO::Socket::INET;

$| = 1;
my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 16, ReuseAddr => 1)
  or die "listen: $!";
print "listening 127.0.0.1:", $listener->sockport, "\n";
my @kept;
while (my $conn = $listener->accept) {
	push @kept, $conn;
	printf "accepted %d %s:%d %s:%d\n", fileno($conn), $conn->sockhost, $conn->sockport, $conn->peerhost, $conn->peerport;
}
