// Mounts GraphiQL on this origin's /graphql (queries) and /graphql/ws (subscriptions).
(function () {
  var ws = new URL('/graphql/ws', window.location.origin);
  ws.protocol = ws.protocol === 'https:' ? 'wss:' : 'ws:';
  var fetcher = GraphiQL.createFetcher({
    url: new URL('/graphql', window.location.origin).toString(),
    subscriptionUrl: ws.toString(),
    fetch: function (url, opts) {
      return fetch(url, Object.assign({}, opts || {}, { credentials: 'same-origin' }));
    },
  });
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, { fetcher: fetcher, defaultEditorToolsVisibility: true })
  );
})();
