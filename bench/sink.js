// A nodemailer smtp-server that accepts everything and keeps nothing: the
// peer bench/run.sh measures beside mailfault. Loopback only.
//   node bench/sink.js PORT
'use strict';
const { SMTPServer } = require('smtp-server');

const port = Number(process.argv[2]);
const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['STARTTLS', 'AUTH'],
  logger: false,
  // No DNS on a loopback benchmark: a reverse lookup per connection would
  // time the resolver, not the server.
  disableReverseLookup: true,
  size: 200 * 1024 * 1024,
  onData(stream, _session, callback) {
    stream.on('data', () => {});
    stream.on('end', () => callback());
  },
});
server.on('error', (e) => console.error(e.message));
server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
