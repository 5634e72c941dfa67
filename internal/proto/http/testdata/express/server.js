// Express 4 with body-parser and method-override, as method-override's README sets them up, for
// TestBodyMethodOverrideOnExpress. It prints the port it listens on and answers every request
// with the method it ran. Needs express@4 and method-override where node finds them (NODE_PATH).
const express = require('express');
const methodOverride = require('method-override');
const app = express();
app.use(express.json());
app.use(express.urlencoded({ extended: true })); // qs: "_method[]" is a list named "_method"
app.use(methodOverride(function (req) {
  if (req.body && typeof req.body === 'object' && '_method' in req.body) {
    const method = req.body._method;
    delete req.body._method;
    return method;
  }
}));
app.all('*', (req, res) => res.json({ ran: req.method }));
const srv = app.listen(0, '127.0.0.1', () => { console.log(srv.address().port); });
