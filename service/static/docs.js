// Swagger UI from the package's own files (no CDN). "Authorize" keeps the key in this page
// only: persistAuthorization would keep it in the browser's storage, readable by any script
// of the origin and left behind on a shared computer.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    persistAuthorization: false,
    deepLinking: true,
  });
});
