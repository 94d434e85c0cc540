"""The API's routers, one per concern; `serving.app.create_app` includes them."""
