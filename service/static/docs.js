// Swagger UI from the package's own files (no CDN); "Authorize" keeps the key across reloads.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    persistAuthorization: true,
    deepLinking: true,
  });
});
